"""Scratch copy of a shard's parsed documents between the two dedup passes.

Line dedup needs two passes over a shard (hash everything in the group, then
remove). Parsing WARC a second time costs about as much as decompressing it, so
the first pass keeps the parsed documents in an LZ4-compressed Arrow IPC file
that the second pass streams back; the file is deleted once the shard is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from ccpipe.document import Document

_FIELDS = [
    ("id", pa.string()),
    ("url", pa.string()),
    ("date_download", pa.string()),
    ("digest", pa.string()),
    ("title", pa.string()),
    ("raw_content", pa.large_string()),
    ("source_domain", pa.string()),
    ("cc_segment", pa.string()),
    ("content_length", pa.int64()),
    ("cc_languages", pa.string()),
    ("truncated", pa.bool_()),
    ("content_type", pa.string()),
    ("charset", pa.string()),
    ("html_lang", pa.string()),
]
_SCHEMA = pa.schema(_FIELDS)
_NAMES = [n for n, _ in _FIELDS]
_BATCH = 1000


def write_doc_cache(path: Path, docs: Iterable[Document]) -> Iterator[Document]:
    """Pass documents through while saving them to ``path`` (atomically on completion)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    opts = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, _SCHEMA, options=opts) as w:
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= _BATCH:
                w.write_batch(_to_batch(batch))
                batch = []
            yield doc
        if batch:
            w.write_batch(_to_batch(batch))
    os.replace(tmp, path)


def _to_batch(docs: list[Document]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({n: [getattr(d, n) for d in docs] for n in _NAMES}, schema=_SCHEMA)


def read_doc_cache(path: Path) -> Iterator[Document]:
    """The cached documents in order, each with its ``position`` in the shard."""
    position = 0
    with pa.memory_map(str(path), "r") as src:
        reader = pa.ipc.open_stream(src)
        for batch in reader:
            cols = batch.to_pydict()
            for i in range(batch.num_rows):
                yield Document(**{n: cols[n][i] for n in _NAMES}, position=position)
                position += 1
