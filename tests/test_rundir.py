"""The output directory: unwritable paths, one run at a time, scratch deleted after
success, audits of unfinished runs (issue 12, item 4)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccpipe import rundir
from ccpipe.audit.data import load_run
from ccpipe.config import load_config
from ccpipe.errors import ConfigError
from ccpipe.executors.base import TaskFailed
from ccpipe.io.dataset import shard_files
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path

FAST = ["--no-progress", "-w", "1", "--set", "perplexity.enabled=false", "--set", "ref.enabled=false"]


def _ccpipe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccpipe.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _config(out: Path, inputs: list[Path], **overrides):
    o = {"input.paths": [str(p) for p in inputs], "output.dir": str(out), "executor.progress": False,
         "perplexity.enabled": False, "ref.enabled": False, "executor.workers": 1}
    o.update(overrides)
    return load_config(None, o)


# --- unwritable output ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_unwritable_output_is_one_line_for_run_and_audit(tmp_path, wet_dir):
    wet = str(wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz")
    line = _one_error_line(_ccpipe("run", wet, "-o", "/proc/ccpipe-test/out", *FAST))
    assert "output.dir '/proc/ccpipe-test/out' cannot be used: No such file or directory" in line
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    line = _one_error_line(_ccpipe("run", wet, "-o", str(a_file / "out"), *FAST))
    assert f"output.dir '{a_file / 'out'}' cannot be used: Not a directory" in line
    run = tmp_path / "run"
    assert _ccpipe("run", wet, "-o", str(run), *FAST).returncode == 0
    line = _one_error_line(_ccpipe("audit", str(run), "-o", "/proc/ccpipe-test/report.html"))
    assert "audit output directory '/proc/ccpipe-test' cannot be used" in line
    # an OSError met later (the report's path is a directory) is one line too
    line = _one_error_line(_ccpipe("audit", str(run), "-o", str(tmp_path)))
    assert "audit: [Errno 21] Is a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_refused_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="Permission denied; choose a directory you can write to"):
            rundir.prepare(ro / "out")
    finally:
        ro.chmod(0o755)


# --- one run at a time ---------------------------------------------------------------


_HOLDER = textwrap.dedent("""
    import sys, time
    from ccpipe.rundir import locked
    with locked(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


@pytest.mark.timeout(60)
def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert rundir.holder(out) is None
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "held"
        who = rundir.holder(out)
        assert who["pid"] == proc.pid and who["host"] == socket.gethostname()
        with pytest.raises(rundir.RunLocked, match=f"in use by another ccpipe run: pid {proc.pid} on host"):
            with rundir.locked(out):
                pass
        assert "still running (pid" in rundir.progress(out)
    finally:
        proc.kill()  # SIGKILL: the kernel drops the lock, the stale file blocks nobody
        proc.wait()
    assert rundir.holder(out) is None
    with rundir.locked(out) as info:
        assert info["pid"] == os.getpid()


@pytest.mark.timeout(300)
def test_second_run_into_the_same_directory_names_the_first(tmp_path, wet_dir):
    wet = str(wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "ccpipe.cli", "run", wet, "-o", str(out), *FAST],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lock = out / rundir.LOCK_NAME

    def first_holds_it() -> bool:
        try:
            return json.loads(lock.read_text() or "{}").get("pid") == first.pid
        except (OSError, ValueError):
            return False

    try:
        end = time.monotonic() + 120
        while not first_holds_it() and time.monotonic() < end and first.poll() is None:
            time.sleep(0.02)
        assert first_holds_it()
        first.send_signal(signal.SIGSTOP)  # frozen while holding the lock: no race with its end
        line = _one_error_line(_ccpipe("run", wet, "-o", str(out), *FAST))
        assert f"{out} is in use by another ccpipe run: pid {first.pid} on host {socket.gethostname()}" in line
        assert f"(command: cli.py run {wet} -o {out}" in line  # python -m ccpipe.cli: argv[0] is cli.py
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=240)
        assert first.returncode == 0, err[-2000:]
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
    assert _ccpipe("run", wet, "-o", str(out), *FAST).returncode == 0  # free again


# --- scratch deleted after success ------------------------------------------------------


@pytest.mark.timeout(300)
def test_work_deleted_after_success_and_what_readers_need_survives(tmp_path, wet_dir):
    wet = wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz"
    out, kept = tmp_path / "out", tmp_path / "kept"
    over = {"input.split_mb": 0.3, "perplexity.head_percentile": 20, "perplexity.middle_percentile": 70}
    (out / "_work.deleting-12345" / "x").mkdir(parents=True)  # left by a kill during a deletion
    a = run_pipeline(_config(out, [wet], **over))
    assert a.shards > 1 and not (out / "_work").exists()
    assert not list(out.glob("_work*"))
    b = run_pipeline(_config(kept, [wet], **over, **{"output.keep_work": True}))
    assert (kept / "_work" / "line_hashes").is_dir()
    assert a.to_dict()["documents"] == b.to_dict()["documents"]
    # a rerun of the finished run does nothing: no shard redone, no scratch recreated
    marks = {f: f.stat().st_mtime_ns for f in (out / "stats").rglob("*.json")}
    again = run_pipeline(_config(out, [wet], **over))
    assert {f: f.stat().st_mtime_ns for f in marks} == marks
    assert not (out / "_work").exists() and again.to_dict() == a.to_dict()
    # keep_work is not part of the run's identity: the kept run resumes, not "another config"
    run_pipeline(_config(kept, [wet], **over))
    # readers of a finished run: the audit finds the run's config (its percentiles) and rows
    data = load_run(out, with_geometry=False)
    assert (data.head_percentile, data.middle_percentile) == (20, 70)
    assert data.unfinished is None
    assert data.docs.num_rows == a.docs_kept == data.stats["documents"]["kept"] > 0
    # another config into the finished run is still refused
    with pytest.raises(ConfigError, match="another config"):
        run_pipeline(_config(out, [wet], **{**over, "langid.threshold": 0.9}))


# --- audits of unfinished runs ---------------------------------------------------------


@pytest.mark.timeout(300)
def test_audit_of_a_run_stopped_before_its_last_phase(tmp_path, wet_dir):
    wet = wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"
    ref = tmp_path / "ref"
    run_pipeline(_config(ref, [wet]))
    out = tmp_path / "out"
    for f in shard_files(ref):  # a file where each partition folder must go: the last phase fails
        block = out / f.parent.relative_to(ref)
        block.parent.mkdir(parents=True, exist_ok=True)
        block.write_text("in the way")
    with pytest.raises(TaskFailed):
        run_pipeline(_config(out, [wet], **{"executor.max_retries": 0}))
    assert not (out / "stats" / "run.json").exists() and not list((out / "stats").glob("shards/*.json"))
    r = _ccpipe("audit", str(out), "-o", str(tmp_path / "report.html"))
    assert r.returncode == 0, r.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    assert "unfinished run: 0 of 1 shard(s) have finished every phase" in html
    assert "stopped before its last phase (run the same `ccpipe run` command again to finish it)" in html
    # a directory that holds no run at all is still refused
    (tmp_path / "empty").mkdir()
    assert "is it an output directory" in _ccpipe("audit", str(tmp_path / "empty"), "-o", str(tmp_path / "e.html")).stderr


def test_ctrl_c_in_audit_is_one_line(tmp_path, monkeypatch, caplog):
    import ccpipe.audit.report as report
    from ccpipe.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "build_report", interrupted)
    assert main(["audit", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 130
    assert "audit interrupted; no report was written" in caplog.text
    assert not (tmp_path / "r.html").exists()
