"""The Ray executor on a real local Ray: same rows as the local executor, retries,
resume. One Ray session for the module (starting Ray takes seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ccpipe[cluster]')")

from ccpipe.config import ExecutorConfig  # noqa: E402
from ccpipe.executors.base import TaskFailed  # noqa: E402
from ccpipe.executors.ray import RayExecutor  # noqa: E402
from ccpipe.pipeline import run_pipeline  # noqa: E402
from ccpipe.stats import Stats  # noqa: E402
from tests.conftest import ROOT, dropped_rows  # noqa: E402
from tests.test_minhash import _table  # noqa: E402
from tests.test_pipeline import config, rows  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    # workers import this module (the task functions below) from the repository root
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}})
    yield
    ray.shutdown()


def _executor(**kw) -> RayExecutor:
    return RayExecutor(ExecutorConfig(kind="ray", progress=False, **kw))


def square(x: int) -> int:
    return x * x


def fail_first_time(args: tuple[str, int]) -> int:
    """Raises on the first attempt for each item, succeeds on the retry."""
    flag, x = args
    mark = Path(f"{flag}-{x}")
    if not mark.exists():
        mark.touch()
        raise RuntimeError(f"transient failure for {x}")
    return x + 100


def die_first_time(args: tuple[str, int]) -> int:
    """Kills its worker process on the first attempt."""
    flag, x = args
    mark = Path(f"{flag}-{x}")
    if not mark.exists():
        mark.touch()
        os._exit(1)
    return x


def always_fails(x: int) -> int:
    raise ValueError(f"bad item {x}")


def broken_input(log: str) -> int:
    """A ccpipe error (a broken input): counts its attempts in ``log``."""
    from ccpipe.errors import InputError

    with open(log, "a") as f:
        f.write("attempt\n")
    raise InputError("input x.wet.gz: HTTP 404 Not Found")


def test_ccpipe_errors_are_not_retried_and_keep_their_message(tmp_path):
    from ccpipe.errors import InputError

    log = tmp_path / "attempts"
    with pytest.raises(InputError, match="HTTP 404 Not Found"):
        list(_executor(max_retries=2).map(broken_input, [str(log)], desc="bad input"))
    assert log.read_text().count("attempt") == 1


def test_map_yields_every_result_once():
    ex = _executor()
    got = dict(ex.map(square, list(range(10)), desc="sq"))
    assert got == {i: i * i for i in range(10)}
    assert list(ex.map(square, [], desc="none")) == []


def test_failed_task_is_retried(tmp_path):
    ex = _executor(max_retries=2)
    got = dict(ex.map(fail_first_time, [(str(tmp_path / "f"), i) for i in range(4)], desc="flaky"))
    assert sorted(got.values()) == [100, 101, 102, 103]


def test_dead_worker_is_retried(tmp_path):
    ex = _executor(max_retries=2)
    got = dict(ex.map(die_first_time, [(str(tmp_path / "d"), i) for i in range(2)], desc="crash"))
    assert sorted(got.values()) == [0, 1]


def test_task_failing_every_time_raises_task_failed():
    ex = _executor(max_retries=1)
    with pytest.raises(TaskFailed, match="bad item 3"):
        list(ex.map(always_fails, [3], desc="bad"))


def test_pipeline_on_ray_same_rows_as_local_and_resume(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz", wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"]
    over = {"executor.workers": 2, "input.split_mb": 0.1, "perplexity.enabled": True,  # buckets placed last
            "output.keep_work": True}  # the resume below edits _work
    local = run_pipeline(config(tmp_path / "local", inputs, **over))
    on_ray = run_pipeline(config(tmp_path / "ray", inputs, **over, **{"executor.kind": "ray"}))
    assert on_ray.shards == local.shards > 4
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    assert _table(tmp_path / "ray") == _table(tmp_path / "local")  # near-dup clusters too
    assert dropped_rows(tmp_path / "ray") == dropped_rows(tmp_path / "local") != ([], [])
    assert on_ray.to_dict()["documents"] == local.to_dict()["documents"]
    assert on_ray.to_dict()["dropped"] == local.to_dict()["dropped"]
    assert "minhash" in on_ray.steps and on_ray.identity_holds()
    assert ray.is_initialized()  # the executor left the session it did not start alone
    # resume: lose two shards entirely (main pass and final output); only they run again
    shard_stats = sorted((tmp_path / "ray" / "stats" / "shards").glob("*.json"))
    lost = shard_stats[:2]
    for f in lost:
        (tmp_path / "ray" / "_work" / "stage" / "stats" / f.name).unlink(missing_ok=True)
        f.unlink()
        for p in [*(tmp_path / "ray" / "data").rglob(f"{f.stem}.parquet"), *(tmp_path / "ray" / "dropped").rglob(f"{f.stem}.parquet")]:
            p.unlink()
    (tmp_path / "ray" / "_work" / "minhash" / "clusters" / "DONE").unlink()
    for f in (tmp_path / "ray" / "_work" / "minhash" / "edges").glob("*.done"):
        f.unlink()
    kept = {f: f.stat().st_mtime_ns for f in shard_stats[2:]}
    again = run_pipeline(config(tmp_path / "ray", inputs, **over, **{"executor.kind": "ray"}))
    assert {f: f.stat().st_mtime_ns for f in kept} == kept
    assert all(f.is_file() for f in lost)
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    assert again.to_dict()["documents"] == local.to_dict()["documents"]
    assert dropped_rows(tmp_path / "ray") == dropped_rows(tmp_path / "local")
    assert Stats.load(tmp_path / "ray" / "stats" / "run.json").identity_holds()
