"""Shared fixtures: the real data in ../shared/data and small WET builders."""

from __future__ import annotations

import hashlib
import io
import signal
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = (ROOT.parent / "shared" / "data").resolve()


def data_path(*parts: str) -> Path:
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data {p} is absent (tests expect ../shared/data beside the project)")
    return p


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run (pipeline on two excerpts, embeddings, a small score model),
    shared by the service and audit tests."""
    from realrun import session_run

    return session_run(tmp_path_factory, data_path("wet").parent)


@pytest.fixture
def wet_dir() -> Path:
    return data_path("wet")


def write_wet(path: Path, pages: list[tuple[str, str]], *, gzip_per_record: bool = True) -> Path:
    """Write a genuine WET file with warcio: ``pages`` are (url, body) pairs, the
    body's first line being the title as in Common Crawl's files."""
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gzip_per_record)
    info = writer.create_warcinfo_record(path.name, {"software": "ccpipe-tests"})
    writer.write_record(info)
    for i, (url, body) in enumerate(pages):
        data = body.encode("utf-8")
        rid = f"<urn:uuid:{uuid.UUID(hashlib.md5(f'{path.name}{i}{url}'.encode()).hexdigest())}>"
        headers = [
            ("WARC-Target-URI", url),
            ("WARC-Date", "2024-05-18T01:58:10Z"),
            ("WARC-Record-ID", rid),
            ("WARC-Block-Digest", "sha1:" + hashlib.sha1(data).hexdigest()),
            ("Content-Type", "text/plain"),
        ]
        rec = writer.create_warc_record(url, "conversion", payload=io.BytesIO(data), warc_headers_dict=dict(headers))
        writer.write_record(rec)
    path.write_bytes(buf.getvalue())
    return path


def dropped_rows(out: Path) -> tuple[list[tuple], list[tuple]]:
    """A run's kept dropped documents and summary rows, per file, in file order
    (``ccpipe.dropped``): what resume, retries and executors must reproduce exactly."""
    from ccpipe.io.dataset import dropped_files
    import pyarrow.parquet as pq

    docs = [(f.name, *r.values()) for f in dropped_files(out, "docs")
            for r in pq.read_table(f, columns=["id", "raw_content", "drop_step", "drop_reason", "drop_value",
                                               "drop_detail", "dup_kept_id"]).to_pylist()]
    summary = [(f.name, *r.values()) for f in dropped_files(out, "summary") for r in pq.read_table(f).to_pylist()]
    summary += [(f.name, *r.values()) for f in dropped_files(out, "cluster_kept") for r in pq.read_table(f).to_pylist()]
    return docs, summary


def near_duplicate_run(root: Path) -> tuple[Path, str]:
    """A run whose MinHash removes a near copy of a real page: the longest page of the
    English excerpt with one line in its middle edited, among other real pages. Returns
    the run directory and the edited line as the copy has it."""
    from ccpipe.config import load_config
    from ccpipe.io.wet import read_wet
    from ccpipe.pipeline import run_pipeline
    from ccpipe.stats import Stats

    docs = list(read_wet(str(data_path("wet", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")), Stats()))
    page = max((d for d in docs if d.raw_content.count("\n") >= 40), key=lambda d: len(d.raw_content))
    lines = page.raw_content.split("\n")
    edited = "This line was edited in the copy, and only in the copy."
    lines[len(lines) // 2] = edited
    pages = [(page.url, f"{page.title}\n{page.raw_content}"), (page.url + "?copy=1", f"{page.title}\n" + "\n".join(lines))]
    pages += [(d.url, f"{d.title}\n{d.raw_content}") for d in docs[:20] if d.id != page.id]
    wet = write_wet(root / "near-dup.warc.wet.gz", pages)
    out = root / "near-dup-run"
    run_pipeline(load_config(ROOT / "configs" / "default.yaml", {
        "input.paths": [str(wet)], "output.dir": str(out), "executor.progress": False, "executor.workers": 1,
        "perplexity.enabled": False, "ref.enabled": False}))
    return out, edited


def sigint_default() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C: SIGINT back to its default.

    A shell starts background jobs (``cmd &``, ``nohup``) with SIGINT ignored and an
    ignored signal stays ignored across exec, so under such a runner Python would start
    with Ctrl-C switched off and the test would see the command finish instead."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
