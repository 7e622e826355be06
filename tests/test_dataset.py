"""A run's rows read as one table by the tools people use: pyarrow, DuckDB."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ccpipe.config import load_config
from ccpipe.io.dataset import partition_values, read_rows, shard_files
from ccpipe.pipeline import run_pipeline
from tests.conftest import ROOT, data_path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Counter]:
    wet = data_path("wet", "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    out = tmp_path_factory.mktemp("dataset") / "out"
    stats = run_pipeline(load_config(ROOT / "configs" / "default.yaml", {
        "input.paths": [str(wet)], "output.dir": str(out), "executor.progress": False, "executor.workers": 2,
        "perplexity.enabled": True, "perplexity.min_calibration_docs": 1, "input.split_mb": 0.2}))
    assert stats.shards >= 2 and stats.docs_kept > 100
    # stats count rows per partition as <language>_<bucket>
    want = Counter({tuple(k.split("_", 1)): v for k, v in stats.by_language.items()})
    return out, want


def _counts(table: pa.Table) -> Counter:
    return Counter(zip(table.column("language").to_pylist(), table.column("bucket").to_pylist()))


def test_layout_is_hive_partitioned_by_language_and_bucket(run):
    out, want = run
    assert sorted(p.name for p in out.iterdir()) == ["_work", "data", "stats"] or (out / "data").is_dir()
    for f in shard_files(out):
        rel = f.relative_to(out / "data").parts
        assert rel[0].startswith("language=") and rel[1].startswith("bucket=") and rel[2].startswith("part-")
        names = pq.read_schema(f).names
        assert "language" not in names and "bucket" not in names  # partition columns live in folder names
    assert {("en", "head"), ("en", "middle"), ("en", "tail"), ("zh", "all")} <= set(want)


def test_pyarrow_dataset_reads_the_run_as_one_table(run):
    out, want = run
    t = ds.dataset(out / "data", partitioning="hive").to_table(columns=["id", "language", "bucket", "perplexity"])
    assert _counts(t) == want
    assert t.num_rows == len(set(t.column("id").to_pylist()))


def test_pyarrow_read_table_on_the_data_folder(run):
    out, want = run
    t = pq.read_table(out / "data", columns=["id", "language", "bucket"])
    assert Counter(zip(map(str, t.column("language").to_pylist()), map(str, t.column("bucket").to_pylist()))) == want


def test_duckdb_reads_the_run_with_hive_partitioning(run):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra")
    out, want = run
    rows = duckdb.sql(
        f"SELECT language, bucket, count(*) FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning = true) "
        "GROUP BY language, bucket").fetchall()
    assert Counter({(lang, b): n for lang, b, n in rows}) == want
    # the perplexity of the no-model languages is null, not a sentinel
    nulls = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/data/**/*.parquet', hive_partitioning = true) "
                       "WHERE bucket = 'all' AND perplexity IS NOT NULL").fetchall()[0][0]
    assert nulls == 0


def test_read_rows_gives_partition_columns_and_reads_old_runs(run, tmp_path):
    out, want = run
    assert _counts(read_rows(out, ["id", "language", "bucket"])) == want
    # a run written before the hive layout: <out>/<language>_<bucket>/part-*.parquet
    legacy = tmp_path / "legacy"
    for i, f in enumerate(shard_files(out)):
        v = partition_values(f)
        dest = legacy / f"{v['language']}_{v['bucket']}" / f"part-{i:05d}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(f), dest)
    (legacy / "_geometry").mkdir()
    pq.write_table(pa.table({"id": ["x"]}), legacy / "_geometry" / "part-00000.parquet")  # never rows
    assert _counts(read_rows(legacy, ["id", "language", "bucket"])) == want
