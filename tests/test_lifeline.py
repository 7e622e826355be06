"""A driver that dies (kill -9) or is interrupted (Ctrl-C) leaves no process behind
(issue 12, items 3 and 4). Real CLI runs, real signals; every wait polls a
condition under a generous deadline, so a slow machine makes them slower, not red."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path, sigint_default

psutil = pytest.importorskip("psutil")

DEADLINE = 60.0  # seconds a leftover process gets to go (they go in about one)


@pytest.fixture(scope="module")
def bench_wet(tmp_path_factory) -> Path:
    tool = data_path("..", "tools", "make_bench_wet.py")
    out = tmp_path_factory.mktemp("bench") / "bench.warc.wet.gz"
    subprocess.run([sys.executable, str(tool), "--docs", "2500", "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def _cli(out: Path, wet: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ccpipe.cli", "run", str(wet), "-o", str(out), "-w", "2",
            "--no-progress", "--set", "input.split_mb=0.6", *extra]


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(procs: list) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _describe(procs: list) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            pass
    return out


def _kill_leftovers(procs: list) -> None:
    for p in _alive(procs):
        try:
            p.kill()
        except psutil.Error:
            pass


def _pool_workers(driver: int) -> list:
    try:
        kids = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "forkserver" in " ".join(k.cmdline()) and k.ppid() != driver]


def _ray_tasks_running(driver: int) -> bool:
    try:
        names = {p.name() for p in psutil.Process(driver).children(recursive=True)}
    except psutil.Error:
        return False
    return {"raylet", "gcs_server", "ray::_call"} <= names


@pytest.mark.timeout(300)
def test_kill_9_of_the_driver_leaves_no_worker_forkserver_or_tracker(tmp_path, bench_wet):
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(out, bench_wet), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    descendants: list = []
    try:
        assert _wait_for(lambda: len(_pool_workers(proc.pid)) == 2, 120)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        assert "forkserver" in names and "resource_tracker" in names  # what used to leak
        proc.kill()  # SIGKILL: the driver can clean nothing up
        proc.wait()
        assert _wait_for(lambda: not _alive(descendants), DEADLINE), _describe(_alive(descendants))
    finally:
        proc.kill()
        _kill_leftovers(descendants)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_says_how_to_resume_and_leaves_nothing_running(tmp_path, bench_wet, how):
    """Ctrl-C (SIGINT to the whole group, as a terminal sends it) and SIGTERM to the
    driver alone (``kill PID``, a scheduler's stop) end the same way: one line, exit
    130 / 143, nothing left running, and the same command resumes."""
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(out, bench_wet), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=sigint_default)
    descendants: list = []
    try:
        assert _wait_for(lambda: len(_pool_workers(proc.pid)) == 2, 120)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == (130 if how == "ctrl-c" else 143), stderr[-3000:]
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
        errors = [ln for ln in stderr.splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and "run the same command again to resume" in errors[0]
        assert ("terminated by SIGTERM" in errors[0]) == (how == "sigterm"), errors[0]
        assert not (out / "stats" / "run.json").exists()
        assert _wait_for(lambda: not _alive(descendants), DEADLINE), _describe(_alive(descendants))
    finally:
        proc.kill()
        _kill_leftovers(descendants)
    # and the same command does resume it
    r = subprocess.run(_cli(out, bench_wet), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = Stats.load(out / "stats" / "run.json")
    assert stats.docs_read == 2500 and stats.identity_holds()


_WORKERS_AT_START = textwrap.dedent("""
    from ccpipe import lifeline
    from ccpipe.config import ExecutorConfig
    from ccpipe.executors.local import LocalExecutor
    if __name__ == "__main__":
        with LocalExecutor(ExecutorConfig(workers=2, progress=False)) as ex:
            print(sorted({r for _, r in ex.map(lifeline.started_deaf_to_ctrl_c, list(range(8)), desc="probe")}, key=str))
""")


def test_pool_workers_ignore_ctrl_c_from_their_first_instruction(tmp_path):
    """A worker imports the pipeline before its initializer runs (a second or more on a
    busy machine); a Ctrl-C then printed its KeyboardInterrupt traceback. The forkserver
    is started with SIGINT ignored, so workers start with it ignored. Run in a fresh
    interpreter: a forkserver started earlier in this process would decide otherwise."""
    script = tmp_path / "probe.py"
    script.write_text(_WORKERS_AT_START)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[True]", (r.stdout, r.stderr[-3000:])


_DRIVER = textwrap.dedent("""
    import subprocess, sys, time
    from ccpipe.lifeline import Guardian, descendant_pids
    before = descendant_pids()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    guardian = Guardian.of_new_descendants(before)
    print(child.pid, guardian.proc.pid, flush=True)
    if sys.argv[1] == "release":
        guardian.release()
        print("released", flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["kill", "release"])
def test_guardian_kills_what_it_guards_only_when_the_driver_dies(tmp_path, how):
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True, env=env)
    child = guardian = None
    try:
        child_pid, guardian_pid = map(int, driver.stdout.readline().split())
        child, guardian = psutil.Process(child_pid), psutil.Process(guardian_pid)
        if how == "release":
            assert driver.stdout.readline().strip() == "released"
            assert _wait_for(lambda: not _alive([guardian]), DEADLINE)
        driver.kill()
        driver.wait()
        if how == "kill":
            assert _wait_for(lambda: not _alive([child, guardian]), DEADLINE), _describe(_alive([child, guardian]))
        else:  # released: the guardian left, the child (orphaned, not guarded any more) lives on
            time.sleep(1.0)
            assert _alive([child])
    finally:
        driver.kill()
        _kill_leftovers([p for p in (child, guardian) if p is not None])


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_kill_9_of_a_driver_that_started_ray_leaves_no_ray_process(tmp_path, bench_wet):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'ccpipe[cluster]')")
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(out, bench_wet, "--executor", "ray"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    descendants: list = []
    try:
        assert _wait_for(lambda: _ray_tasks_running(proc.pid), 240)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(p.name() for p in descendants)
        assert "raylet" in names and "gcs_server" in names and "ray::" in names
        proc.kill()
        proc.wait()
        # Ray's own fate sharing ends the raylet and GCS; its agents used to wait a minute
        # on the dead GCS: the guardian ends them at once, so 30 s is generous
        assert _wait_for(lambda: not _alive(descendants), 30), _describe(_alive(descendants))
    finally:
        proc.kill()
        _kill_leftovers(descendants)
