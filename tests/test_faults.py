"""A worker SIGKILLed at a chosen point of every phase: the run retries, exits normally
with no rerun, and writes exactly the rows of an uninterrupted run.

The fault hook (``CCPIPE_FAULT``, :mod:`ccpipe.faults`) fires once per run. ``done``
kills a worker after its task wrote its completion marker but before the result
reached the driver: the retried task must return at once (every task is idempotent).
``middle`` kills it with part of its output written and no marker: the retried
task must redo it cleanly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ccpipe.config import load_config
from ccpipe.io.dataset import partition_name, read_rows, shard_files
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path, dropped_rows

CASES = [(phase, point) for phase in ("read", "minhash_buckets", "minhash_cluster", "merge", "process", "cutoffs",
                                      "finalize") for point in ("middle", "done")] + [("process", "start")]


def _cfg(out: Path):
    wet = data_path("wet", "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    return load_config(ROOT / "configs" / "default.yaml", {
        "input.paths": [str(wet)], "output.dir": str(out), "executor.progress": False, "executor.workers": 2,
        "input.split_mb": 0.1, "minhash.buckets": 3, "perplexity.enabled": True, "ref.enabled": False,
        "perplexity.min_calibration_docs": 1,
        "output.keep_work": True,  # the test looks for _work/fault.fired after the run
    })


def _rows(out: Path) -> list[tuple]:
    got = []
    for f in shard_files(out):
        t = read_rows(out, ["id", "raw_content", "dup_cluster_id", "perplexity"], files=[f])
        got += [(partition_name(f), r["id"], r["raw_content"], r["dup_cluster_id"], r["perplexity"]) for r in t.to_pylist()]
    return sorted(got)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[tuple], dict]:
    out = tmp_path_factory.mktemp("faults") / "ref"
    stats = run_pipeline(_cfg(out))
    assert stats.shards >= 3
    assert dropped_rows(out)[0]  # the dropped documents are compared below too
    return out, _rows(out), stats.to_dict()["documents"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("phase,point", CASES)
def test_killed_worker_at_every_phase_gives_the_rows_of_an_uninterrupted_run(tmp_path, monkeypatch, caplog,
                                                                            reference, phase, point):
    ref_dir, ref_rows, ref_docs = reference
    task = 0 if phase not in ("process", "finalize", "read") else 1  # not the first shard: others are in flight
    monkeypatch.setenv("CCPIPE_FAULT", f"{phase}:{point}:{task}")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="ccpipe.executors.local"):
        stats = run_pipeline(_cfg(out))
    assert (out / "_work" / "fault.fired").is_file(), "the fault must fire for this test to mean anything"
    assert any("worker process died" in r.getMessage() for r in caplog.records)
    assert _rows(out) == ref_rows
    assert dropped_rows(out) == dropped_rows(ref_dir)  # <out>/dropped/ as exact as the rows
    assert stats.to_dict()["documents"] == ref_docs
    assert Stats.load(out / "stats" / "run.json").identity_holds()
    assert not list((out / "data").rglob(".part-*"))  # no temporary file left among the rows
    assert not list((out / "dropped").rglob(".part-*"))
