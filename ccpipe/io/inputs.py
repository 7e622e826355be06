"""From what the user named (paths, globs, URLs, a crawl id) to a list of shards."""

from __future__ import annotations

import glob
import gzip
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ccpipe.config import InputConfig
from ccpipe.errors import ConfigError, InputError
from ccpipe.io.http import Backoff, content_length, get_bytes
from ccpipe.io.wet import ByteRange

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shard:
    """One unit of work: a byte range of one input file."""

    task_id: int
    path: str
    range: ByteRange
    size: int
    """Compressed bytes this shard covers (for progress and balancing)."""
    group_id: int = 0
    index_in_group: int = 0


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def backoff_of(cfg: InputConfig) -> Backoff:
    return Backoff(attempts=cfg.retry_attempts, base_seconds=cfg.retry_base_seconds, max_seconds=cfg.retry_max_seconds)


def http_get(url: str, *, attempts: int = 8, backoff: float = 2.0, max_seconds: float = 60.0,
             timeout: float = 60.0) -> bytes:
    """GET with retries and exponential backoff (``ccpipe.io.http``): connection errors,
    timeouts, 408/425/429/5xx are retried, ``Retry-After`` obeyed; the error names the status."""
    return get_bytes(url, Backoff(attempts=attempts, base_seconds=backoff, max_seconds=max(backoff, max_seconds),
                                  timeout=timeout))


def parse_segments(spec: str | None, n: int, kind: str = "WET") -> range:
    if not spec:
        return range(n)
    try:
        if "-" in spec:
            a, b = spec.split("-", 1)
            r = range(int(a), int(b) + 1)
        else:
            r = range(int(spec), int(spec) + 1)
    except ValueError:
        raise ConfigError(f"input.segments {spec!r} must be N or A-B (inclusive)") from None
    if not r or r.start < 0 or r.stop > n:
        raise ConfigError(f"input.segments {spec!r} is outside 0-{n - 1} (the crawl has {n} {kind} files)")
    return r


def crawl_paths(cfg: InputConfig, cache_dir: Path | None = None) -> list[str]:
    """WET (or WARC, ``input.crawl_files``) file URLs of a crawl's segment range, from
    its ``wet.paths.gz`` (``warc.paths.gz``), cached."""
    from ccpipe.paths import ccpipe_home

    base = cfg.base_url.rstrip("/") + "/"
    name = f"crawl-data/{cfg.crawl}/{cfg.crawl_files}.paths.gz"
    cache = (cache_dir or ccpipe_home() / "crawls") / f"{cfg.crawl}.{cfg.crawl_files}.paths.gz"
    if cache.is_file():
        raw = cache.read_bytes()
    else:
        if base.startswith(("http://", "https://")):
            raw = get_bytes(base + name, backoff_of(cfg))
        else:  # s3://, file://, a local mirror directory, ...
            import fsspec

            try:
                with fsspec.open(base + name, "rb") as f:
                    raw = f.read()
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read {base + name}: {e}") from e
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, cache)
    lines = [ln for ln in gzip.decompress(raw).decode().splitlines() if ln.strip()]
    return [base + lines[i] for i in parse_segments(cfg.segments, len(lines), cfg.crawl_files.upper())]


def expand_paths(cfg: InputConfig) -> list[str]:
    """Every input file, in a stable order; fails early on a path that matches nothing."""
    out: list[str] = []
    for p in cfg.paths:
        if _is_remote(p):
            if any(c in p for c in "*?["):
                import fsspec

                fs, _, matches = fsspec.get_fs_token_paths(p)
                if not matches:
                    raise InputError(f"input glob {p!r} matches no file")
                proto = p.split("://", 1)[0]
                out.extend(sorted(f"{proto}://{m}" for m in matches))
            else:
                out.append(p)
            continue
        local = os.path.expanduser(p[7:] if p.startswith("file://") else p)
        if any(c in local for c in "*?["):
            matches = sorted(m for m in glob.glob(local, recursive=True) if os.path.isfile(m))
            if not matches:
                raise InputError(f"input glob {p!r} matches no file")
            out.extend(matches)
        elif os.path.isdir(local):
            matches = sorted(
                str(m) for m in Path(local).rglob("*")
                if m.is_file() and (".wet" in m.name or ".warc" in m.name or m.suffix == ".gz")
            )
            if not matches:
                raise InputError(f"input directory {p!r} holds no .wet/.warc/.gz file")
            out.extend(matches)
        elif os.path.isfile(local):
            out.append(local)
        else:
            raise InputError(f"input {p!r} does not exist")
    if cfg.crawl:
        out.extend(crawl_paths(cfg))
    if not out:
        raise ConfigError("no input: give WET or WARC paths (ccpipe run FILE...) or input.crawl + input.segments")
    return out


def _size(path: str) -> int:
    if not _is_remote(path):
        return os.path.getsize(path)
    if path.startswith(("http://", "https://")):
        size = content_length(path)
        if size is None:
            log.warning("could not get the size of %s; reading it as one shard", path)
        return size or 0
    try:
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return int(fs.size(p) or 0)
    except Exception as e:  # noqa: BLE001 - a size is only a hint for splitting
        log.warning("could not stat %s (%s); reading it as one shard", path, e)
        return 0


def plan_shards(cfg: InputConfig, group_size: int) -> list[Shard]:
    """Split inputs into shards (byte ranges of per-record gzip files) and groups."""
    shards: list[Shard] = []
    split = int(cfg.split_mb * 1024 * 1024)
    for path in expand_paths(cfg):
        size = _size(path)
        n = 1
        if split and size > split and path.endswith(".gz"):
            n = math.ceil(size / split)
        step = math.ceil(size / n) if n > 1 else 0
        for i in range(n):
            rng = ByteRange(i * step, (i + 1) * step if i < n - 1 else None) if n > 1 else ByteRange()
            shards.append(Shard(len(shards), path, rng, step if n > 1 else size))
    return [
        Shard(s.task_id, s.path, s.range, s.size, s.task_id // group_size, s.task_id % group_size)
        for s in shards
    ]
