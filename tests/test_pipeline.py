"""The pipeline end to end: real WET in, parquet and stats out, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ccpipe.config import load_config
from ccpipe.errors import ConfigError, InputError
from ccpipe.io.dataset import partition_name, read_rows, shard_files
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path, write_wet


def rows(out: Path) -> list[tuple]:
    """Every output row as (partition, id, text, language, nlines), sorted."""
    got = []
    for f in shard_files(out):
        t = read_rows(out, ["id", "raw_content", "language", "nlines"], files=[f])
        got += [(partition_name(f), r["id"], r["raw_content"], r["language"], r["nlines"]) for r in t.to_pylist()]
    return sorted(got)


def config(out: Path, inputs: list[Path], **overrides):
    o = {"input.paths": [str(p) for p in inputs], "output.dir": str(out), "executor.progress": False,
         # partitions here are languages: no perplexity buckets even where models are built
         "perplexity.enabled": False, "ref.enabled": False}
    o.update(overrides)
    return load_config(ROOT / "configs" / "default.yaml", o)


def test_real_excerpts_end_to_end(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz", wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"]
    stats = run_pipeline(config(tmp_path / "out", inputs, **{"executor.workers": 2}))
    assert stats.docs_read == 195 and stats.docs_errored == 0
    assert stats.identity_holds()
    assert stats.docs_kept + stats.docs_dropped == 195
    got = rows(tmp_path / "out")
    assert len(got) == stats.docs_kept > 100
    langs = {r[0] for r in got}
    assert {"en", "ru", "zh"} <= langs
    assert all(r[0] == r[3] for r in got)  # partition directory = language
    # schema carries CCNet's fields
    one = next((tmp_path / "out" / "data" / "language=en").glob("part-*.parquet"))
    names = pq.read_schema(one).names + ["language"]  # hive: the partition column is the folder
    for field in ("url", "date_download", "digest", "length", "nlines", "source_domain", "title", "raw_content",
                  "original_nlines", "original_length", "language", "language_score", "cc_segment"):
        assert field in names
    assert pq.ParquetFile(one).metadata.row_group(0).column(0).compression == "ZSTD"
    # stats on disk: per shard and merged, both add up
    merged = json.loads((tmp_path / "out" / "stats" / "run.json").read_text())
    assert merged["documents"]["read"] == merged["documents"]["kept"] + merged["documents"]["dropped"] + merged["documents"]["errored"]
    shard_files = sorted((tmp_path / "out" / "stats" / "shards").glob("*.json"))
    assert sum(Stats.load(f).docs_read for f in shard_files) == 195
    st = merged["steps"]["line_dedup"]
    assert st["counters"]["lines_in"] > st["counters"]["lines_out"] > 0
    assert st["counters"]["hashset_bytes"] > 0 and "hashset_peak_bytes" in st["counters"]
    assert merged["steps"]["lang_id"]["docs_in"] == st["docs_out"]
    assert merged["steps"]["minhash"]["docs_out"] == st["docs_in"]  # documents first, then lines


def test_broken_inputs_counted_and_run_survives(tmp_path):
    broken = sorted(data_path("wet", "broken").iterdir())
    stats = run_pipeline(config(tmp_path / "out", broken, **{"executor.workers": 2, "langid.threshold": 0.0}))
    assert stats.identity_holds()
    # the readable text of the 4 records cut off by the end of their file is kept, flagged
    assert stats.errors == {"missing_header": 2, "truncated_header": 1}
    assert stats.counters["records_truncated_kept"] == 4
    assert stats.docs_read == 36 + 7
    assert stats.docs_kept + stats.docs_dropped == 40
    t = read_rows(tmp_path / "out", ["id", "truncated", "raw_content"]).to_pylist()
    cut = [r for r in t if r["truncated"]]
    assert 1 <= len(cut) <= 4 and all(r["raw_content"] for r in cut)
    assert not any(r["truncated"] for r in t if r not in cut)
    dropped = run_pipeline(config(tmp_path / "drop", broken, **{"executor.workers": 2, "langid.threshold": 0.0,
                                                               "input.truncated": "drop"}))
    assert dropped.errors == {"missing_header": 2, "truncated_header": 1, "truncated_record": 4}
    assert dropped.docs_kept + dropped.docs_dropped == 36
    assert dropped.docs_kept == stats.docs_kept - len(cut)


def test_same_rows_for_1_and_2_workers_and_rerun_skips(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz"]
    a = run_pipeline(config(tmp_path / "a", inputs, **{"executor.workers": 1, "input.split_mb": 0.1}))
    b = run_pipeline(config(tmp_path / "b", inputs, **{"executor.workers": 2, "input.split_mb": 0.1}))
    assert a.shards == b.shards > 2
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    marker = next((tmp_path / "a" / "stats" / "shards").glob("*.json"))
    before = marker.stat().st_mtime_ns
    again = run_pipeline(config(tmp_path / "a", inputs, **{"executor.workers": 1, "input.split_mb": 0.1}))
    assert marker.stat().st_mtime_ns == before  # finished shards are not redone
    assert again.to_dict()["documents"] == a.to_dict()["documents"]


def test_keep_first_keeps_more_lines(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"]
    ccnet = run_pipeline(config(tmp_path / "a", inputs))
    first = run_pipeline(config(tmp_path / "b", inputs, **{"dedup.keep_first": True}))
    assert first.steps["line_dedup"].counters["lines_out"] > ccnet.steps["line_dedup"].counters["lines_out"]


def test_rerun_with_other_config_refused(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz"]
    run_pipeline(config(tmp_path / "out", inputs))
    with pytest.raises(ConfigError, match="another config"):
        run_pipeline(config(tmp_path / "out", inputs, **{"langid.threshold": 0.9}))


def test_restart_if_changed_replaces_a_run_of_another_config(tmp_path, wet_dir):
    inputs = [wet_dir / "CC-MAIN-2024-22-00000.one-page.warc.wet.gz"]
    out = tmp_path / "out"
    run_pipeline(config(out, inputs))
    (out / "notes.txt").write_text("mine")
    changed = config(out, inputs, **{"langid.threshold": 0.9})
    with pytest.raises(ConfigError, match="another config"):
        run_pipeline(changed)
    stats = run_pipeline(changed, restart_if_changed=True)
    assert stats.docs_read >= 1
    assert json.loads((out / "stats" / "run_config.json").read_text())["config"]["langid"]["threshold"] == 0.9
    assert (out / "notes.txt").read_text() == "mine"  # not ours: kept
    run_pipeline(changed, restart_if_changed=True)  # same config: resumes, nothing deleted


def test_configs_default_yaml_is_the_code_default():
    """`ccpipe run` without --config and with configs/default.yaml must be one pipeline
    (langid.max_chars once differed: 2000 in the file, whole text in the code)."""
    import dataclasses

    def flat(obj, prefix=""):
        if dataclasses.is_dataclass(obj):
            return {k: v for f in dataclasses.fields(obj) for k, v in flat(getattr(obj, f.name), f"{prefix}{f.name}.").items()}
        return {prefix.rstrip("."): obj}

    from_file, from_code = flat(load_config(ROOT / "configs" / "default.yaml")), flat(load_config(None))
    assert {k: (v, from_code[k]) for k, v in from_file.items() if from_code[k] != v} == {}


def test_bad_config_and_paths_fail_early(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, {"dedup.grup_size": 3})
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, {"dedup.group_size": "many"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="does not exist"):
        run_pipeline(config(tmp_path / "out", [tmp_path / "missing.wet.gz"]))
    with pytest.raises(ConfigError, match="no input"):
        run_pipeline(load_config(None, {"output.dir": str(tmp_path / "o")}))


def test_cli_reports_config_errors_cleanly(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "ccpipe.cli", "run", str(tmp_path / "nothing.gz"), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


# --- resume after a kill ---------------------------------------------------


@pytest.fixture(scope="module")
def bench_wet(tmp_path_factory) -> Path:
    tool = data_path("..", "tools", "make_bench_wet.py")
    out = tmp_path_factory.mktemp("bench") / "bench.warc.wet.gz"
    subprocess.run([sys.executable, str(tool), "--docs", "2500", "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out


def _cli(out: Path, wet: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "ccpipe.cli", "run", str(wet), "-o", str(out), "-w", str(workers),
            "--no-progress", "--set", "input.split_mb=0.6"]


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.timeout(300)
def test_sigkill_then_resume_gives_the_same_rows(tmp_path, bench_wet):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cli(ref, bench_wet, 2), check=True, capture_output=True, timeout=240)
    total = len(list((ref / "stats" / "shards").glob("*.json")))
    assert total >= 4
    proc = subprocess.Popen(_cli(killed, bench_wet, 2), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = killed / "stats" / "shards"
    assert _wait_for(lambda: markers.is_dir() and any(markers.glob("*.json")), 120)
    os.killpg(proc.pid, signal.SIGKILL)  # driver and every worker, mid-run
    proc.wait()
    done = len(list(markers.glob("*.json")))
    assert 0 < done < total, "the kill must land mid-run for this test to mean anything"
    subprocess.run(_cli(killed, bench_wet, 2), check=True, capture_output=True, timeout=240)
    assert rows(killed) == rows(ref)
    assert Stats.load(killed / "stats" / "run.json").to_dict()["documents"] == Stats.load(ref / "stats" / "run.json").to_dict()["documents"]
    assert not list(killed.rglob(".part-*.tmp"))


@pytest.mark.timeout(300)
def test_killed_worker_is_retried(tmp_path, bench_wet):
    psutil = pytest.importorskip("psutil")
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cli(ref, bench_wet, 1), check=True, capture_output=True, timeout=240)
    proc = subprocess.Popen(_cli(out, bench_wet, 2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    markers = out / "stats" / "shards"
    assert _wait_for(lambda: markers.is_dir() and any(markers.glob("*.json")), 120)
    # pool workers are forked by the forkserver, a child of the driver
    servers = [p for p in psutil.Process(proc.pid).children() if "forkserver" in " ".join(p.cmdline())]
    workers = [w for s in servers for w in s.children()]
    assert workers, "no worker process found"
    workers[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert "worker process died" in err or "retry" in err
    assert rows(out) == rows(ref)
