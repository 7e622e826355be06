"""Shared fixtures: the real data in ../shared/data and small WET builders."""

from __future__ import annotations

import hashlib
import io
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
    return docs, summary
