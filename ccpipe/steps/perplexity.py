"""Perplexity under a per-language SentencePiece + KenLM model, and CCNet's buckets.

CCNet's recipe, reproduced exactly: each line is normalised for the LM
(:func:`ccpipe.text.normalize_for_lm`), cut into SentencePiece pieces joined by
spaces, and scored by KenLM in log10 with ``<s>`` and ``</s>``; the document's
perplexity is ``10 ** (-sum(logprob) / sum(n_pieces + 1))``, rounded to one
decimal. Documents in languages without a model get a null perplexity and bucket
``all``. The bucket is ``head`` below the language's ``head`` percentile,
``middle`` below its ``middle`` percentile, else ``tail``; by default the
percentiles are the run's own and buckets are assigned in the run's last phase
(:mod:`ccpipe.buckets`); with ``calibration: reference`` this step assigns them
from a reference table (CCNet's ``cutoff.csv``).
"""

from __future__ import annotations

import csv
import logging
import re
import sys
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.models import BUILD_HINT, available_lm_languages, check_file, cutoff_path, kenlm_path, lm_dir, sp_path
from ccpipe.steps.base import Step, TaskContext
from ccpipe.text import UNICODE_PUNCT

log = logging.getLogger(__name__)

NO_MODEL_BUCKET = "all"
_KENLM_MAGIC = b"mmap lm "

# --- fast LM normalisation of a whole document (same result as normalize_for_lm per line)
_CONTROL_NO_NL = "".join(map(chr, [*range(0, 10), *range(11, 32), *range(127, 160)]))
_DIGIT_RE = re.compile(r"\d")
_CONTROL_NO_NL_RE = re.compile("[" + re.escape(_CONTROL_NO_NL) + "]")
_PUNCT_RE = re.compile("[" + re.escape("".join(UNICODE_PUNCT)) + "]")
_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")
_ASCII_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
_ASCII_CONTROL_NO_NL = bytes(c for c in [*range(0, 32), 127] if c != 10)
_MN_BMP_RE: re.Pattern | None = None
_MN_ASTRAL_TABLE: "_AstralMarks | None" = None


def _mn_ranges(lo: int, hi: int) -> list[tuple[int, int]]:
    cps = [cp for cp in range(lo, hi) if unicodedata.category(chr(cp)) == "Mn"]
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


class _AstralMarks(dict):
    """``str.translate`` table that deletes combining marks above U+FFFF, filled on
    demand: only the code points a text holds are looked up (building the whole
    table took ~0.8 s per worker process)."""

    def __missing__(self, cp: int) -> int | None:
        value = None if unicodedata.category(chr(cp)) == "Mn" else cp
        self[cp] = value
        return value


def _strip_marks(text: str) -> str:
    """Delete combining marks (category Mn) from NFD text.

    A regex over the Basic Multilingual Plane's marks is ~4x faster than
    ``str.translate`` with a dict; the rare marks above U+FFFF (historic
    scripts, musical notation) go through a translate table filled on demand.
    """
    global _MN_BMP_RE, _MN_ASTRAL_TABLE
    if _MN_BMP_RE is None:
        cls = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                      for a, b in _mn_ranges(0, 0x10000))
        _MN_BMP_RE = re.compile(f"[{cls}]+")
    text = _MN_BMP_RE.sub("", text)
    if _ASTRAL_RE.search(text):
        if _MN_ASTRAL_TABLE is None:
            _MN_ASTRAL_TABLE = _AstralMarks()
        text = text.translate(_MN_ASTRAL_TABLE)
    return text


def _ascii_punct(m: re.Match) -> str:
    return UNICODE_PUNCT[m.group()]


def normalize_doc_for_lm(text: str) -> list[str]:
    """``[normalize_for_lm(line) for line in text.split("\\n")]``, in one pass.

    Every operation is per character and neither makes nor removes a ``\\n``
    (control characters other than ``\\n`` are deleted here, ``\\n`` by the
    split), so working on the joined text gives the same lines several times
    faster than a call per line. Same order as CCNet: digits become 0 before
    Unicode punctuation is mapped (so a full-width digit one becomes ``0``).
    """
    joined = "\n".join([line.strip() for line in text.split("\n")]).lower()
    if joined.isascii():
        # no marks, no Unicode punctuation: digits -> 0 and control characters (not
        # \n) deleted in one C pass over the bytes
        return joined.encode("ascii").translate(_ASCII_DIGITS_TO_0, _ASCII_CONTROL_NO_NL).decode("ascii").split("\n")
    joined = _strip_marks(unicodedata.normalize("NFD", joined))
    joined = _DIGIT_RE.sub("0", joined)
    joined = _PUNCT_RE.sub(_ascii_punct, joined)
    joined = _CONTROL_NO_NL_RE.sub("", joined)
    return joined.split("\n")


def pp(log_score: float, length: int) -> float:
    """CCNet's perplexity from a log10 score and a token count (pieces + one </s> per line)."""
    return 10.0 ** (-log_score / length)


def load_cutoffs(path: Path) -> dict[str, list[float]]:
    """A CCNet-layout ``cutoff.csv``: first column the percentile 0..99, one column per language."""
    path = Path(path)
    check_file(path, "perplexity cutoff table", "compute it with `ccpipe models cutoffs` or " + BUILD_HINT)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        langs = rows[0][1:]
        table: dict[str, list[float]] = {lang: [] for lang in langs}
        for row in rows[1:]:
            for lang, value in zip(langs, row[1:]):
                table[lang].append(float(value) if value else float("nan"))
    except (IndexError, ValueError) as e:
        raise ModelError(f"perplexity cutoff table {path} is unreadable ({e}); recompute it with `ccpipe models cutoffs`") from e
    bad = [lang for lang, v in table.items() if len(v) != 100]
    if bad:
        raise ModelError(f"perplexity cutoff table {path}: columns {bad} do not have 100 percentiles; recompute it")
    return table


def save_cutoffs(table: dict[str, list[float]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    langs = sorted(table)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *langs])
        for i in range(100):
            w.writerow([i, *(f"{table[lang][i]:.1f}" for lang in langs)])
    tmp.replace(path)


def bucket_of(perplexity: float | None, cutoffs: list[float] | None, head: int = 30, middle: int = 60) -> str:
    """``head`` if pp < p<head>, ``middle`` if pp < p<middle>, else ``tail``; ``all``
    without a score or cutoffs."""
    if perplexity is None or perplexity < 0 or cutoffs is None:
        return NO_MODEL_BUCKET
    if perplexity < cutoffs[head]:
        return "head"
    if perplexity < cutoffs[middle]:
        return "middle"
    return "tail"


def _load_sp(path: Path):
    try:
        import sentencepiece as spm
    except ImportError as e:
        raise ModelError("sentencepiece is missing: pip install sentencepiece") from e
    check_file(path, "SentencePiece model", BUILD_HINT)
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ModelError(f"SentencePiece model {path} is corrupt ({e}); {BUILD_HINT}") from e
    return sp


def _load_kenlm(path: Path):
    try:
        import kenlm
    except ImportError as e:
        raise ModelError("the kenlm Python module is missing: pip install kenlm") from e
    check_file(path, "KenLM model", BUILD_HINT)
    try:
        return kenlm.Model(str(path))
    except (OSError, RuntimeError) as e:
        raise ModelError(f"KenLM model {path} is corrupt ({e}); {BUILD_HINT}") from e


class LMScorer:
    """One language's SentencePiece + KenLM pair."""

    def __init__(self, sp_model: Path, lm_model: Path) -> None:
        self.sp = _load_sp(sp_model)
        self.lm = _load_kenlm(lm_model)

    def score_lines(self, lines: list[str]) -> tuple[float, int]:
        """Sum of log10 scores and of (pieces + 1) over already-normalised lines."""
        score, encode = self.lm.score, self.sp.encode
        log_score, length = 0.0, 0
        for line in lines:
            # one call per line: sentencepiece's list input starts a thread pool per call,
            # which measured 4x slower in wall time than this on a document's ~10 lines
            pieces = encode(line, out_type=str)
            tokenized = " ".join(pieces)
            log_score += score(tokenized, bos=True, eos=True)
            # CCNet counts len(tokenized.split()); for ASCII text that is the number of
            # pieces (pieces hold no whitespace: control characters are gone by now)
            length += (len(pieces) if tokenized.isascii() else len(tokenized.split())) + 1
        return log_score, length

    def perplexity(self, text: str) -> float:
        log_score, length = self.score_lines(normalize_doc_for_lm(text))
        return round(pp(log_score, length), 1)


class Perplexity(Step):
    """Write ``perplexity`` (and, with ``assign_buckets``, ``bucket``) into
    ``doc.extras``; drops nothing."""

    name = "perplexity"
    output_fields = {"perplexity": pa.float64()}

    def __init__(
        self,
        model_dir: str | Path | None = None,
        languages: list[str] | None = None,
        cutoffs: str | Path | None = None,
        head_percentile: int = 30,
        middle_percentile: int = 60,
        assign_buckets: bool = True,
    ) -> None:
        self.model_dir = lm_dir(Path(model_dir).expanduser() if model_dir else None)
        self.languages = list(languages) if languages else None
        self.cutoffs_path = Path(cutoffs).expanduser() if cutoffs else cutoff_path(self.model_dir)
        self.head_percentile = head_percentile
        self.middle_percentile = middle_percentile
        self.assign_buckets = assign_buckets
        self._scorers: dict[str, LMScorer | None] = {}
        self._cutoffs: dict[str, list[float]] | None = None
        self._langs: set[str] = set()

    def _unloaded(self):
        return {"_scorers": {}, "_cutoffs": None, "_langs": set()}

    @classmethod
    def from_config(cls, cfg) -> "Perplexity | None":
        """The step for a ``PerplexityConfig``, or ``None`` when disabled (or ``auto``
        and no model exists)."""
        if cfg.enabled is False:
            return None
        step = cls(cfg.model_dir, cfg.languages, cfg.cutoffs, cfg.head_percentile, cfg.middle_percentile,
                   assign_buckets=cfg.calibration == "reference")
        if cfg.enabled == "auto" and not step.model_languages():
            log.warning("perplexity: no models in %s, step skipped (%s)", step.model_dir, BUILD_HINT)
            return None
        return step

    def model_languages(self) -> list[str]:
        return self.languages if self.languages is not None else available_lm_languages(self.model_dir)

    def check(self) -> None:
        """Fail before any work if a configured model or the cutoff table is missing or corrupt."""
        langs = self.model_languages()
        if not langs:
            raise ModelError(f"no perplexity models in {self.model_dir}; {BUILD_HINT} "
                             "or set perplexity.enabled=false")
        for lang in langs:
            check_file(sp_path(lang, self.model_dir), "SentencePiece model")
            lm = self.lm_file(lang)
            check_file(lm, "KenLM model", magic=_KENLM_MAGIC if lm.suffix == ".bin" else None)
            # load both now (SentencePiece is small, a KenLM binary is memory-mapped) so
            # a corrupt file fails the run here rather than in every worker
            _load_sp(sp_path(lang, self.model_dir))
            _load_kenlm(lm)
        if not self.assign_buckets:
            if self.cutoffs_path.is_file():
                load_cutoffs(self.cutoffs_path)  # a corrupt fallback table fails here too
            return
        table = load_cutoffs(self.cutoffs_path)
        missing = [lang for lang in langs if lang not in table]
        if missing:
            log.warning("cutoff table %s has no column for %s: their bucket will be 'all'", self.cutoffs_path, missing)

    def prepare(self, ctx: TaskContext) -> None:
        if not self._langs:
            self._langs = set(self.model_languages())
        if self.assign_buckets and self._cutoffs is None:
            self._cutoffs = load_cutoffs(self.cutoffs_path)

    def lm_file(self, lang: str) -> Path:
        """``<lang>.arpa.bin``, or a plain ``<lang>.arpa`` when only that exists (slow to load)."""
        binary = kenlm_path(lang, self.model_dir)
        arpa = self.model_dir / f"{lang}.arpa"
        return arpa if not binary.exists() and arpa.is_file() else binary

    def scorer(self, lang: str | None) -> LMScorer | None:
        """The language's models, loaded on first use in this process."""
        if lang in self._scorers:
            return self._scorers[lang]
        s = None
        if lang in self._langs:
            s = LMScorer(sp_path(lang, self.model_dir), self.lm_file(lang))
        self._scorers[lang] = s
        return s

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        counters = ctx.stats.step(self.name).counters
        for doc in docs:
            s = self.scorer(doc.language)
            perplexity = s.perplexity(doc.raw_content) if s is not None else None
            doc.extras["perplexity"] = perplexity
            counters["scored" if perplexity is not None else "no_model"] += 1
            if self.assign_buckets:
                bucket = bucket_of(perplexity, self._cutoffs.get(doc.language), self.head_percentile, self.middle_percentile)
                doc.extras["bucket"] = bucket
                counters[f"bucket_{bucket}"] += 1
            yield doc
