"""``ccpipe-geometry`` run as a user runs it (a subprocess): bad arguments, an unwritable run
directory and Ctrl-C each end in one line on stderr and a non-zero exit, never a
traceback; an interrupted ``embed`` or ``train`` continues with the command it printed.

Ctrl-C is a real SIGINT. To land it while the work is surely in progress, the test waits
for a log line the command prints mid-way (a shard embedded, an epoch done), stops the
process (SIGSTOP), queues the SIGINT and lets it go on (SIGCONT): the interrupt is then
delivered before the next line of Python runs, however fast the machine is.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import documents, make_run, write_shard

from tests.conftest import sigint_default

CLI = [sys.executable, "-m", "geometry.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# A directory nobody may create entries in, root included (sysfs).
READ_ONLY_DIR = Path("/sys/kernel")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line or ": error:" in line]


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str, rc: int = 2) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errs = error_lines(proc.stderr)
    assert len(errs) == 1, proc.stderr[-3000:]
    for w in words:
        assert w in errs[0], (w, errs[0])
    return errs[0]


R = "RUN_DIR"  # argument checks run before anything is opened


@pytest.mark.parametrize(("args", "option"), [
    (["neighbours", R, "ID", "-k", "-5"], "-k"),
    (["neighbours", R, "ID", "-k", "0"], "-k"),
    (["neighbours", R, "ID", "--candidates", "0"], "--candidates"),
    (["path", R, "A", "B", "--points", "100000"], "--points"),
    (["path", R, "A", "B", "--points", "0"], "--points"),
    (["path", R, "A", "B", "--points", "1"], "--points"),
    (["distance", R, "A", "B", "--points", "2"], "--points"),
    (["distance", R, "A", "B", "--c", "nan"], "--c"),
    (["distance", R, "A", "B", "--c", "-1"], "--c"),
    (["train", R, "--epochs", "-1"], "--epochs"),
    (["train", R, "--epochs", "0"], "--epochs"),
    (["train", R, "--batch-size", "0"], "--batch-size"),
    (["train", R, "--lr", "inf"], "--lr"),
    (["train", R, "--lr", "0"], "--lr"),
    (["train", R, "--hidden", "0"], "--hidden"),
    (["train", R, "--blocks", "-1"], "--blocks"),
    (["train", R, "--sigma-min", "0"], "--sigma-min"),
    (["train", R, "--seed", "-3"], "--seed"),
    (["embed", R, "--batch-size", "0"], "--batch-size"),
    (["embed", R, "--batch-size", "ten"], "--batch-size"),
    (["distance", R, "A", "B", "--device", "bogus"], "--device"),
    (["train", R, "--device", "cuda:99"], "--device"),  # no machine has 100 GPUs
    (["serve", R, "--port", "70000"], "--port"),
    (["serve", R, "--max-k", "0"], "--max-k"),
    (["serve", R, "--batch-window-ms", "nan"], "--batch-window-ms"),
    (["serve", R, "--batch-max-pairs", "0"], "--batch-max-pairs"),
    (["client", "--timeout", "0", "health"], "--timeout"),
    (["client", "neighbours", "ID", "-k", "-5"], "-k"),
    (["client", "path", "A", "B", "--points", "2"], "--points"),
])
def test_bad_numbers_are_refused_in_one_line(args: list[str], option: str) -> None:
    proc = cli(*args, timeout=120)
    line = assert_one_line_error(proc, f"argument {option}")
    assert proc.stdout == ""
    assert line.endswith("--help)")
    assert len(proc.stderr.strip().splitlines()) == 1  # no usage block either


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded run (synthetic documents, the real MiniLM model)."""
    from geometry.embed import EmbedConfig, embed_run

    run = make_run(tmp_path_factory.mktemp("emb"), n_per_topic=6)
    embed_run(run, EmbedConfig(progress=False))
    return run


@pytest.mark.skipif(not READ_ONLY_DIR.is_dir(), reason=f"{READ_ONLY_DIR} is absent (no sysfs): no directory that root cannot write")
def test_unwritable_run_directory_in_embed_is_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "_geometry").symlink_to(READ_ONLY_DIR)  # <run>/_geometry cannot take new entries
    proc = cli("embed", run, "--no-progress")
    assert_one_line_error(proc, "embed", str(run / "_geometry"), "is it writable")


@pytest.mark.skipif(not READ_ONLY_DIR.is_dir(), reason=f"{READ_ONLY_DIR} is absent (no sysfs): no directory that root cannot write")
def test_unwritable_output_directory_in_train_is_one_line_before_training(tmp_path: Path, embedded: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded / "_geometry" / "embeddings", run / "_geometry" / "embeddings")
    (run / "_geometry" / "score").symlink_to(READ_ONLY_DIR)
    proc = cli("train", run, "--epochs", "2", "--hidden", "16", "--blocks", "1", "--batch-size", "8")
    assert_one_line_error(proc, "train", str(run / "_geometry" / "score"), "is it writable")
    assert "epoch 1" not in proc.stderr  # refused before any training, not at the first checkpoint


def interrupt_when(args: list[str], marker: str, sig: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Run the CLI, send it a real SIGINT (or ``sig``) once ``marker`` appears on its stderr."""
    proc = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=sigint_default)
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                # Stopped, the SIGINT is pending and lands as soon as it runs again: mid-work.
                proc.send_signal(signal.SIGSTOP)
                proc.send_signal(sig)
                proc.send_signal(signal.SIGCONT)
                break
        else:
            raise AssertionError(f"{marker!r} never appeared: {''.join(seen)[-3000:]}")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)


def resume_command(line: str) -> list[str]:
    """The command the interrupted run printed, as arguments of ``python -m geometry.cli``."""
    assert "ccpipe-geometry " in line, line
    return shlex.split(line[line.index("ccpipe-geometry ") :])[1:]


@pytest.mark.slow
def test_ctrl_c_in_embed_is_one_line_and_the_same_command_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    docs = documents(n_per_topic=5)  # 20 short documents over 5 shards
    for i in range(5):
        write_shard(run / "en" / f"part-{i:05d}.parquet", docs[4 * i : 4 * i + 4])
    proc = interrupt_when(["embed", run, "--no-progress"], "embedded en/part-00000.parquet")
    line = assert_one_line_error(proc, "embed stopped (Ctrl-C)", "same command", rc=130)
    meta = json.loads((run / "_geometry" / "embeddings" / "meta.json").read_text())
    assert 4 <= meta["count"] < 20  # the first shard is kept, the rest is not done
    again = cli(*resume_command(line))
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert out["total_docs"] == 20 and out["indexed"] == 20
    assert out["shards_embedded"] == 5 - len(meta["shards"])  # only what was not done


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "words", "rc"), [(signal.SIGINT, "(Ctrl-C)", 130), (signal.SIGTERM, "(SIGTERM)", 143)])
def test_ctrl_c_in_train_is_one_line_and_resume_continues(tmp_path: Path, embedded: Path, sig: int, words: str,
                                                          rc: int) -> None:
    """Ctrl-C, and SIGTERM (``kill PID``, a scheduler's stop) the same way with exit 143."""
    run = tmp_path / "run"
    shutil.copytree(embedded / "_geometry" / "embeddings", run / "_geometry" / "embeddings")
    args = ["train", run, "--epochs", "4", "--hidden", "16", "--blocks", "1", "--batch-size", "4", "--seed", "1"]
    proc = interrupt_when(args, "epoch 2:", sig)  # logged after epoch 1 was checkpointed
    line = assert_one_line_error(proc, f"train stopped {words}", "last.pt", "--resume", rc=rc)
    score = sorted(p.name for p in (run / "_geometry" / "score").iterdir())
    assert "last.pt" in score and "model.pt" not in score, (score, proc.stderr[-3000:])
    again = cli(*resume_command(line))
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert Path(out["checkpoint"]).exists() and out["epochs"]["epoch"] == 4, (out, again.stderr[-3000:])
