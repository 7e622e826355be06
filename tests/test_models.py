"""Model tooling end to end: a pipeline run with perplexity buckets, cutoffs from its
output, the CLI, and failing at start when a model is missing."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ccpipe.config import load_config
from ccpipe.errors import ModelError
from ccpipe.io.dataset import partition_name, read_rows, shard_files
from ccpipe.paths import find_binary
from ccpipe.pipeline import build_steps, run_pipeline
from ccpipe.steps.perplexity import load_cutoffs, save_cutoffs
from tests.conftest import ROOT, write_wet

spm = pytest.importorskip("sentencepiece")
pytest.importorskip("kenlm")
pytest.importorskip("fasttext")

EN = [
    "The committee met on Tuesday to discuss the new budget for the public library and the schools.",
    "Researchers at the university published a study about river pollution in the northern valleys.",
    "The museum will open a new exhibition about the history of railways in the region next spring.",
    "Local farmers said that the dry summer had reduced the harvest of wheat and barley this year.",
    "The city council approved a plan to build more bicycle lanes along the main roads of the centre.",
    "Students can borrow books, use the computers and attend free lectures every week at the library.",
]
DE = "Der Gemeinderat hat am Dienstag beschlossen, die Bibliothek im Stadtzentrum zu renovieren und zu erweitern."


def unigram_arpa(lines: list[str], sp) -> str:
    """A real (maximum-likelihood, add-one) unigram model over the pieces of ``lines``."""
    counts = collections.Counter()
    for pieces in sp.encode(lines, out_type=str):
        counts.update(pieces)
        counts["</s>"] += 1
    counts["<unk>"] += 1
    total = sum(counts.values()) + len(counts)
    rows = [f"{math.log10((c + 1) / total):.6f}\t{w}" for w, c in sorted(counts.items())]
    rows.append("-99\t<s>")
    rows = [r + "\t0" for r in rows]  # KenLM wants a bigram section: one bigram, zero backoffs
    return "\\data\\\nngram 1=%d\nngram 2=1\n\n\\1-grams:\n%s\n\n\\2-grams:\n-0.5\t<s> </s>\n\n\\end\\\n" % (
        len(rows), "\n".join(rows))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(line.lower() for line in EN * 5))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(d / "sp"), vocab_size=120,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    (d / "en.sp.model").write_bytes((d / "sp.model").read_bytes())
    sp = spm.SentencePieceProcessor()
    sp.Load(str(d / "en.sp.model"))
    (d / "en.arpa").write_text(unigram_arpa([line.lower() for line in EN], sp))
    save_cutoffs({"en": [float(i) for i in range(100)]}, d / "cutoff.csv")  # replaced after a first run
    return d


def _pages(n: int = 24) -> list[tuple[str, str]]:
    pages = []
    for i in range(n):
        body = "\n".join([f"Page {i}", *(EN[(i + k) % len(EN)] for k in range(1 + i % 4))])
        if i % 5 == 0:  # out-of-domain text scores worse
            body += "\nZebra quantum xylophone jukebox vortex quiz fjord nymph glyph crwth."
        pages.append((f"https://example.org/{i}", body))
    pages.append(("https://example.de/x", f"Seite\n{DE}\n{DE.replace('Bibliothek', 'Schule')}"))
    return pages


def _cfg(tmp_path: Path, model_dir: Path, wet: Path, **o):
    base = {
        "input.paths": [str(wet)], "output.dir": str(tmp_path / "out"), "executor.progress": False,
        "executor.workers": 1, "dedup.enabled": False, "perplexity.enabled": True,
        "perplexity.model_dir": str(model_dir), "ref.enabled": False, "minhash.enabled": False,
        "quality_score.enabled": False,
    }
    base.update(o)
    return load_config(ROOT / "configs" / "default.yaml", base)


def test_pipeline_writes_perplexity_buckets_and_cutoffs_follow(tmp_path, model_dir):
    wet = write_wet(tmp_path / "in.warc.wet.gz", _pages())
    stats = run_pipeline(_cfg(tmp_path, model_dir, wet, **{"perplexity.min_calibration_docs": 5}))
    out = tmp_path / "out"
    parts = sorted(partition_name(f) for f in shard_files(out))
    assert "de_all" in parts and all(p.startswith(("en_", "de_")) for p in parts)
    assert (out / "data" / "language=en" / "bucket=head" / "part-00000.parquet").is_file()
    rows = read_rows(out, ["language", "perplexity", "bucket"]).to_pylist()
    assert "bucket" not in pq.read_schema(shard_files(out)[0]).names  # hive: the folder holds it
    en = [r["perplexity"] for r in rows if r["language"] == "en"]
    assert len(en) == 24 and all(p > 1 for p in en)
    assert [r["perplexity"] for r in rows if r["language"] == "de"] == [None]  # no model: null
    assert stats.to_dict()["steps"]["perplexity"]["docs_in"] == 25
    # calibrated on this run: the run's own p30 / p60 (the cutoff table held 0..99)
    run_cut = json.loads((out / "stats" / "cutoffs.json").read_text())["languages"]["en"]
    assert run_cut["source"] == "run" and run_cut["docs"] == 24
    assert run_cut["percentiles"] == pytest.approx(list(np.percentile(en, np.arange(100))))
    by = stats.to_dict()["steps"]["perplexity"]["counters"]
    p30, p60 = run_cut["percentiles"][30], run_cut["percentiles"][60]
    assert by["bucket_head"] == sum(p < p30 for p in en) == sum(r["bucket"] == "head" for r in rows)
    assert by["bucket_tail"] == sum(p >= p60 for p in en) == sum(r["bucket"] == "tail" for r in rows)
    assert by["bucket_all"] == 1
    assert all((r["bucket"] == "head") == (r["perplexity"] < p30) for r in rows if r["language"] == "en")

    # cutoffs from this run's output, then a run bucketing by that reference table
    from ccpipe.cli import main

    assert main(["models", "cutoffs", str(out), "--out", str(tmp_path / "cutoff.csv")]) == 0
    table = load_cutoffs(tmp_path / "cutoff.csv")
    assert set(table) == {"en"} and table["en"][0] == min(en) and table["en"][30] <= table["en"][60]
    run2 = run_pipeline(_cfg(tmp_path, model_dir, wet, **{"output.dir": str(tmp_path / "out2"),
                                                           "perplexity.calibration": "reference",
                                                           "perplexity.cutoffs": str(tmp_path / "cutoff.csv")}))
    assert not (tmp_path / "out2" / "stats" / "cutoffs.json").exists()
    by = run2.to_dict()["steps"]["perplexity"]["counters"]
    assert by["bucket_all"] == 1 and by["bucket_head"] + by["bucket_middle"] + by["bucket_tail"] == len(en)
    # ties make the split approximate: head < p30 <= middle < p60 <= tail
    assert by["bucket_head"] == sum(p < table["en"][30] for p in en) >= 3
    assert by["bucket_tail"] == sum(p >= table["en"][60] for p in en) >= 0.3 * len(en)
    # too few documents to calibrate on: the reference table decides
    run3 = run_pipeline(_cfg(tmp_path, model_dir, wet, **{"output.dir": str(tmp_path / "out3"),
                                                           "perplexity.min_calibration_docs": 25,
                                                           "perplexity.cutoffs": str(tmp_path / "cutoff.csv")}))
    cut3 = json.loads((tmp_path / "out3" / "stats" / "cutoffs.json").read_text())["languages"]["en"]
    assert cut3["source"] == "reference" and cut3["percentiles"] == table["en"]
    assert run3.to_dict()["steps"]["perplexity"]["counters"]["bucket_head"] == by["bucket_head"]


def test_missing_model_fails_at_start_naming_the_file(tmp_path, model_dir):
    wet = write_wet(tmp_path / "in.warc.wet.gz", _pages(3))
    broken = tmp_path / "lm"
    broken.mkdir()
    (broken / "en.sp.model").write_bytes((model_dir / "en.sp.model").read_bytes())
    with pytest.raises(ModelError, match=r"en\.arpa\.bin not found; build the defaults with `ccpipe models build-defaults`"):
        run_pipeline(_cfg(tmp_path, broken, wet))
    assert not (tmp_path / "out").exists()  # failed before any work
    with pytest.raises(ModelError, match=r"ref_classifier\.bin not found.*train-ref"):
        run_pipeline(_cfg(tmp_path, model_dir, wet, **{"ref.enabled": True, "ref.model": str(tmp_path / "ref_classifier.bin")}))


def test_auto_skips_without_models_and_steps_follow_ccnet_order(tmp_path, model_dir):
    empty = tmp_path / "none"
    cfg = _cfg(tmp_path, empty, tmp_path / "x.wet.gz", **{"perplexity.enabled": "auto", "quality.enabled": True})
    assert [s.name for s in build_steps(cfg)] == ["lang_id", "quality"]
    cfg = _cfg(tmp_path, model_dir, tmp_path / "x.wet.gz", **{"dedup.enabled": True, "quality.enabled": True})
    assert [s.name for s in build_steps(cfg)] == ["line_dedup", "lang_id", "perplexity", "quality"]
    cfg = _cfg(tmp_path, model_dir, tmp_path / "x.wet.gz", **{"quality.enabled": True, "quality_score.enabled": True})
    assert [s.name for s in build_steps(cfg)] == ["lang_id", "perplexity", "quality", "quality_score"]


@pytest.mark.skipif(find_binary("lmplz") is None, reason="lmplz not built (ccpipe models build-kenlm)")
def test_cli_train_lm_builds_both_files(tmp_path):
    from ccpipe.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"{s} Number {i}." for i in range(40) for s in EN))
    assert main(["models", "train-lm", "en", str(corpus), "--vocab-size", "200", "--out-dir", str(tmp_path / "lm")]) == 0
    assert (tmp_path / "lm" / "en.sp.model").stat().st_size > 0
    assert (tmp_path / "lm" / "en.arpa.bin").read_bytes()[:8] == b"mmap lm "
