"""Row output: one file per shard and partition, written atomically.

Rows land in ``<out>/data/language=<lang>[/bucket=<bucket>]/part-<shard>.parquet``
(:mod:`ccpipe.io.dataset`): a hive layout, so the partition columns ``language``
and ``bucket`` live in the folder names and not in the files. Each file is
written under a temporary name and renamed when the shard is complete, so a
reader never sees half a file and a rerun of a failed shard overwrites exactly
the files it owns. The same writer stages rows as LZ4 Arrow IPC files
(``fmt="arrow"``) when a later phase must still place them (perplexity buckets
calibrated on the run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from ccpipe.document import Document
from ccpipe.io.dataset import partition_path

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
        ("truncated", pa.bool_()),
        ("content_type", pa.string()),
        ("charset", pa.string()),
        ("html_lang", pa.string()),
    ]
)
_BASE_NAMES = [f.name for f in BASE_SCHEMA]


def output_schema(extra_fields: dict[str, pa.DataType]) -> pa.Schema:
    schema = BASE_SCHEMA
    for name, tp in extra_fields.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, tp))
    return schema


PARTITION_COLUMNS = ("language", "bucket")


def file_schema(schema: pa.Schema) -> pa.Schema:
    """The columns stored in a row file: all but the partition columns."""
    return pa.schema([f for f in schema if f.name not in PARTITION_COLUMNS])


def partition_of(doc: Document) -> str:
    """The document's partition folder, relative to the data root."""
    return partition_path(doc.language, doc.extras.get("bucket"))


def partition_label(doc: Document) -> str:
    """A short name of the document's partition for stats: ``en_head``, ``de``."""
    lang = doc.language or "unknown"
    bucket = doc.extras.get("bucket")
    return f"{lang}_{bucket}" if bucket else lang


def shard_file_name(task_id: int, fmt: str = "parquet") -> str:
    return f"part-{task_id:05d}.{fmt}"


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
        fmt: str = "parquet",
    ):
        self.out_dir = Path(out_dir)
        self.task_id = task_id
        self.schema = file_schema(schema)
        self.fmt = fmt
        self.compression = None if compression == "none" else compression
        self.row_group_rows = row_group_rows
        self.buffer_chars = buffer_chars
        self._chars: dict[str, int] = {}
        self._base = [n for n in _BASE_NAMES if n not in PARTITION_COLUMNS]
        self._extra = [n for n in self.schema.names if n not in _BASE_NAMES]
        self._buffers: dict[str, list[Document]] = {}
        self._writers: dict[str, object] = {}
        self._tmp: dict[str, Path] = {}
        self.rows: dict[str, int] = {}

    def _tmp_path(self, partition: str) -> Path:
        d = self.out_dir / partition
        d.mkdir(parents=True, exist_ok=True)
        return d / f".{shard_file_name(self.task_id, self.fmt)}.tmp"

    def _flush(self, partition: str) -> None:
        docs = self._buffers.pop(partition, [])
        self._chars[partition] = 0
        if not docs:
            return
        cols: dict[str, list] = {name: [getattr(d, name) for d in docs] for name in self._base}
        for name in self._extra:
            cols[name] = [d.extras.get(name) for d in docs]
        table = pa.Table.from_pydict(cols, schema=self.schema)
        w = self._writers.get(partition)
        if w is None:
            path = self._tmp_path(partition)
            self._tmp[partition] = path
            if self.fmt == "arrow":
                w = pa.ipc.new_file(str(path), self.schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))
            else:
                w = pq.ParquetWriter(path, self.schema, compression=self.compression)
            self._writers[partition] = w
        if self.fmt == "arrow":
            w.write_table(table, max_chunksize=self.row_group_rows)
        else:
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
            dest = tmp.with_name(shard_file_name(self.task_id, self.fmt))
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
