"""Dropped documents kept under <out>/dropped/ (ccpipe.dropped): every drop accounted for,
with its step, reason and the value that caused it; the sample is the first N per reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ccpipe.config import load_config
from ccpipe.errors import ConfigError
from ccpipe.io.dataset import dropped_files, read_dropped, read_rows
from ccpipe.pipeline import run_pipeline
from ccpipe.steps.quality import GopherQuality
from tests.conftest import ROOT, data_path


def _cfg(out: Path, **over):
    wet = data_path("wet")
    o = {"input.paths": [str(wet / "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz"),
                         str(wet / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")],
         "output.dir": str(out), "executor.progress": False, "executor.workers": 2, "input.split_mb": 0.1,
         "minhash.buckets": 3, "perplexity.enabled": False, "ref.enabled": False,
         "quality.enabled": True}  # Gopher rules: a step with many reasons
    o.update(over)
    return load_config(ROOT / "configs" / "default.yaml", o)


@pytest.fixture(scope="module")
def all_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dropped") / "all"
    return out, run_pipeline(_cfg(out, **{"output.keep_dropped": "all"}))


def test_every_dropped_document_is_kept_with_its_reason_and_value(all_run):
    out, stats = all_run
    docs = read_dropped(out)
    reasons = Counter(f"{s}/{r}" for s, r in zip(docs.column("drop_step").to_pylist(), docs.column("drop_reason").to_pylist()))
    assert reasons == Counter(stats.to_dict()["dropped"])
    assert len(reasons) >= 4  # several steps and rules, or the test shows little
    summary = read_dropped(out, kind="summary")
    assert Counter(f"{s}/{r}" for s, r in zip(summary.column("drop_step").to_pylist(),
                                               summary.column("drop_reason").to_pylist())) == reasons
    kept = set(read_rows(out, ["id"]).column("id").to_pylist())
    dropped = docs.column("id").to_pylist()
    assert len(set(dropped)) == len(dropped) and not kept & set(dropped)
    assert len(kept) + len(dropped) == stats.docs_read - stats.docs_errored
    rows = docs.to_pylist()
    lid = [r for r in rows if r["drop_step"] == "lang_id"]
    assert lid and all(r["drop_value"] < 0.5 and r["drop_value"] == pytest.approx(r["language_score"], abs=1e-4)
                       and f"language {r['language']}, score" in r["drop_detail"] for r in lid)
    mh = [r for r in rows if r["drop_step"] == "minhash"]
    assert mh and all(r["dup_kept_id"] in kept and r["drop_value"] >= 2 and r["dup_kept_id"] in r["drop_detail"] for r in mh)
    gopher = [r for r in rows if r["drop_step"] == "quality"]
    assert gopher and all(r["drop_reason"].startswith("gopher_") and r["drop_detail"].startswith(r["drop_reason"]) for r in gopher)
    rules = GopherQuality.from_config(_cfg(out).quality)
    for r in gopher:  # the kept text is what the step judged, and the value is the rule's measure of it
        assert rules.check_document(r["raw_content"], r["language"]) == r["drop_reason"]
        assert r["drop_value"] == pytest.approx(rules.measure(r["raw_content"], r["language"], r["drop_reason"])[0])
    # a cluster's kept member as MinHash saw it: before line dedup took the lines it shares
    ck = read_dropped(out, ["id", "raw_content"], kind="cluster_kept").to_pylist()
    final = {r["id"]: r for r in read_rows(out, ["id", "raw_content", "dup_cluster_size"]).to_pylist()}
    assert {r["dup_kept_id"] for r in mh} <= {r["id"] for r in ck}
    assert {r["id"] for r in ck} == {i for i, r in final.items() if r["dup_cluster_size"] > 1}
    for r in ck:
        lines = r["raw_content"].split("\n")
        it = iter(lines)
        assert all(any(x == y for y in it) for x in final[r["id"]]["raw_content"].split("\n"))  # a subsequence
    assert any(r["raw_content"] != final[r["id"]]["raw_content"] for r in ck)
    c = stats.counters
    assert c["dropped_docs_kept"] == len(dropped) and c["dropped_docs_summarized"] == summary.num_rows
    files = dropped_files(out, "docs") + dropped_files(out, "summary") + dropped_files(out, "cluster_kept")
    assert c["dropped_bytes"] == sum(f.stat().st_size for f in files) > 0


def test_sample_is_the_first_documents_of_each_reason_per_shard(tmp_path, all_run):
    all_out, all_stats = all_run
    out = tmp_path / "sample"
    stats = run_pipeline(_cfg(out, **{"output.dropped_per_reason": 2}))  # keep_dropped: sample is the default
    assert [f.name for f in dropped_files(out)] == [f.name for f in dropped_files(all_out)]
    n = 0
    for f_all, f in zip(dropped_files(all_out), dropped_files(out)):
        want: dict[tuple, list] = {}
        for r in pq.read_table(f_all, columns=["id", "drop_step", "drop_reason"]).to_pylist():
            want.setdefault((r["drop_step"], r["drop_reason"]), []).append(r["id"])
        got: dict[tuple, list] = {}
        for r in pq.read_table(f, columns=["id", "drop_step", "drop_reason"]).to_pylist():
            got.setdefault((r["drop_step"], r["drop_reason"]), []).append(r["id"])
        assert got == {k: v[:2] for k, v in want.items()}
        n += sum(len(v) for v in got.values())
    assert n < all_stats.docs_dropped  # the sample is smaller than everything
    assert stats.counters["dropped_docs_kept"] == n
    # the summary still has a row for every dropped document
    cols = ["source_domain", "length", "nlines", "drop_step", "drop_reason"]
    assert read_dropped(out, cols, kind="summary").to_pylist() == read_dropped(all_out, cols, kind="summary").to_pylist()


def test_keep_dropped_none_writes_nothing(tmp_path):
    out = tmp_path / "none"
    stats = run_pipeline(_cfg(out, **{"output.keep_dropped": "none", "quality.enabled": False}))
    assert stats.docs_dropped > 0
    assert not (out / "dropped").exists()
    assert "dropped_bytes" not in stats.counters


@pytest.mark.parametrize("key,value", [("output.keep_dropped", "some"), ("output.dropped_per_reason", 0)])
def test_bad_keep_dropped_config_is_a_config_error(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        _cfg(tmp_path / "x", **{key: value})


def test_score_drops_carry_the_score_and_the_limit(tmp_path):
    from ccpipe.models import quality_model_path as quality_score_path

    if not quality_score_path().is_file():
        pytest.skip(f"no quality model at {quality_score_path()} (ccpipe models build-defaults)")
    out = tmp_path / "qs"
    stats = run_pipeline(_cfg(out, **{"quality.enabled": False, "quality_score.enabled": "auto",
                                       "quality_score.drop_below": 0.5, "output.keep_dropped": "all"}))
    rows = [r for r in read_dropped(out).to_pylist() if r["drop_step"] == "quality_score"]
    assert len(rows) == stats.to_dict()["dropped"]["quality_score/below_threshold"] > 0
    assert all(r["drop_value"] == pytest.approx(r["quality_score"], abs=1e-6) and r["drop_value"] < 0.5
               and r["drop_detail"] == f"quality_score {r['drop_value']:.4g} < 0.5" for r in rows)
    kept = read_rows(out, ["quality_score"]).column("quality_score").to_pylist()
    assert min(kept) >= 0.5  # the other side of the same limit
