"""Parquet output: one file per shard and partition, written atomically.

Rows land in ``<out>/<partition>/part-<shard>.parquet`` where the partition is the
language, or ``<language>_<bucket>`` once a step sets a perplexity bucket. Each
file is written under a temporary name and renamed when the shard is complete, so
a reader never sees half a file and a rerun of a failed shard overwrites exactly
the files it owns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ccpipe.document import Document

BASE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("date_download", pa.string()),
        ("digest", pa.string()),
        ("source_domain", pa.string()),
        ("title", pa.string()),
        ("raw_content", pa.large_string()),
        ("length", pa.int64()),
        ("nlines", pa.int64()),
        ("original_length", pa.int64()),
        ("original_nlines", pa.int64()),
        ("content_length", pa.int64()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("cc_languages", pa.string()),
        ("cc_segment", pa.string()),
    ]
)
_BASE_NAMES = [f.name for f in BASE_SCHEMA]


def output_schema(extra_fields: dict[str, pa.DataType]) -> pa.Schema:
    schema = BASE_SCHEMA
    for name, tp in extra_fields.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, tp))
    return schema


def partition_of(doc: Document) -> str:
    lang = doc.language or "unknown"
    bucket = doc.extras.get("bucket")
    return f"{lang}_{bucket}" if bucket else lang


def shard_file_name(task_id: int) -> str:
    return f"part-{task_id:05d}.parquet"


class ShardWriter:
    """Buffers one shard's documents per partition and writes them as parquet."""

    def __init__(
        self,
        out_dir: Path,
        task_id: int,
        schema: pa.Schema,
        compression: str = "zstd",
        row_group_rows: int = 5000,
        buffer_chars: int = 8_000_000,
    ):
        self.out_dir = Path(out_dir)
        self.task_id = task_id
        self.schema = schema
        self.compression = None if compression == "none" else compression
        self.row_group_rows = row_group_rows
        self.buffer_chars = buffer_chars
        self._chars: dict[str, int] = {}
        self._extra = [n for n in schema.names if n not in _BASE_NAMES]
        self._buffers: dict[str, list[Document]] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._tmp: dict[str, Path] = {}
        self.rows: dict[str, int] = {}

    def _tmp_path(self, partition: str) -> Path:
        d = self.out_dir / partition
        d.mkdir(parents=True, exist_ok=True)
        return d / f".{shard_file_name(self.task_id)}.tmp"

    def _flush(self, partition: str) -> None:
        docs = self._buffers.pop(partition, [])
        self._chars[partition] = 0
        if not docs:
            return
        cols: dict[str, list] = {name: [getattr(d, name) for d in docs] for name in _BASE_NAMES}
        for name in self._extra:
            cols[name] = [d.extras.get(name) for d in docs]
        table = pa.Table.from_pydict(cols, schema=self.schema)
        w = self._writers.get(partition)
        if w is None:
            path = self._tmp_path(partition)
            self._tmp[partition] = path
            w = pq.ParquetWriter(path, self.schema, compression=self.compression)
            self._writers[partition] = w
        w.write_table(table, row_group_size=self.row_group_rows)
        self.rows[partition] = self.rows.get(partition, 0) + len(docs)

    def write(self, doc: Document) -> None:
        part = partition_of(doc)
        buf = self._buffers.setdefault(part, [])
        buf.append(doc)
        # bound memory by text held, not only rows: web pages vary 1000x in size
        self._chars[part] = self._chars.get(part, 0) + len(doc.raw_content)
        if len(buf) >= self.row_group_rows or self._chars[part] >= self.buffer_chars:
            self._flush(part)

    def write_all(self, docs: Iterable[Document]) -> None:
        for doc in docs:
            self.write(doc)

    def close(self) -> list[Path]:
        """Flush, close and move every file into place. Returns the final paths."""
        for part in list(self._buffers):
            self._flush(part)
        final: list[Path] = []
        for part, w in self._writers.items():
            w.close()
        for part, tmp in self._tmp.items():
            dest = tmp.with_name(shard_file_name(self.task_id))
            os.replace(tmp, dest)
            final.append(dest)
        self._writers.clear()
        return final

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
