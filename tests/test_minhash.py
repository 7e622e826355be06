"""MinHash near-duplicate removal: signatures, LSH parameters, union-find, and the
cross-shard shuffle end to end (planted near duplicates in several shards)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ccpipe import minhash_core as mc
from ccpipe.config import load_config
from ccpipe.errors import ConfigError
from ccpipe.io.dataset import read_rows, shard_files
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from ccpipe.steps.minhash import union_find
from tests.conftest import ROOT, data_path, write_wet

datasketch = pytest.importorskip("datasketch")


def _paragraphs() -> list[str]:
    lines = data_path("text", "wikitext2", "valid.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.strip()) > 400 and not line.startswith(" =")]


def _edit(text: str, rng: random.Random, n: int) -> str:
    words = text.split(" ")
    for _ in range(n):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["alpha", "beta", "gamma", "delta"])
    return " ".join(words)


# --- core -------------------------------------------------------------------


def test_signatures_are_datasketch_minhashes():
    text = _paragraphs()[0]
    sig = mc.signatures([text, text, "", "!!! ..."])
    assert sig.shape == (4, 128) and sig.dtype == np.uint32
    assert np.array_equal(sig[0], sig[1])
    assert mc.has_shingles(sig).tolist() == [True, True, False, False]
    # the same values as a fresh MinHash fed each document's shingle hashes one by one
    # (also after another document: the reused MinHash must not carry state over)
    # and for a document of several update_batch chunks
    texts = _paragraphs()[:3] + [" ".join(_paragraphs()[3:20])]
    assert mc.shingle_hashes(texts[-1]).size > 2 * mc.CHUNK
    sigs = mc.signatures(texts)
    for t, row in zip(texts, sigs):
        m = datasketch.MinHash(num_perm=128, seed=1, hashfunc=int, scheme="affine32")
        m.update_batch(mc.shingle_hashes(t).tolist())
        assert np.array_equal(m.hashvalues, row)


def _reference_shingles(text: str, ngram: int = 5) -> list[int]:
    """Shingle hashes from the word hashes by the definition, with Python ints."""
    wh = [int(x) for x in mc.word_hashes(text)]
    n = min(ngram, len(wh))
    out = []
    for i in range(len(wh) - n + 1 if wh else 0):
        h = sum(w * pow(mc._K_WORD, j, 1 << 64) for j, w in enumerate(wh[i : i + n])) % (1 << 64)
        h ^= h >> 29
        h = h * int(mc._M64) % (1 << 64)
        out.append((h ^ (h >> 29)) >> 32)
    return out


def test_documents_hashed_together_get_their_own_shingles(monkeypatch):
    paras = _paragraphs()
    texts = ["", paras[0], "two words", " ,;\t\n", "Ünïcödé WÖRDS, 123 ÄÖ and ΣΊΣΥΦΟΣ", "", paras[1],
             "one two three four five", " ".join(paras[2:40])]
    monkeypatch.setattr(mc, "BLOCK_BYTES", 2000)  # several blocks, one document over a block
    many = mc.shingle_hashes_many(texts)
    assert len(many) == len(texts)
    for t, got in zip(texts, many):
        assert got.dtype == np.uint32
        assert got.tolist() == _reference_shingles(t)
    assert [x.size for x in many[:4]] == [0, len(mc._split_words(paras[0])) - 4, 1, 0]
    assert mc.shingle_hashes_many([]) == [] and mc.signatures([]).shape == (0, 128)
    assert [x.size for x in mc.shingle_hashes_many(["", " ;; ", ""])] == [0, 0, 0]
    # ASCII capitals are lowered by the byte table, the rest by str.lower()
    assert mc._normalised("Ab ÄÖ Σ") == mc._normalised("ab äö σ") == "ab\x00äö\x00σ".encode()


def test_vectorised_hashes_follow_the_words():
    text = " ".join(_paragraphs()[:4])
    words = mc._split_words(text)
    wh = mc.word_hashes(text).tolist()
    assert len(wh) == len(words)
    assert len(set(zip(wh, words))) == len(set(words)) == len(set(wh))  # equal word <=> equal hash
    # a passage hashes the same wherever it sits (prefix sums times inverse powers),
    # also far past the first power-table sizes
    tail = mc.shingle_hashes(text)
    shifted = mc.shingle_hashes("Filler, words; " * 40000 + text)
    assert np.array_equal(shifted[-tail.size:], tail)
    assert mc.shingle_hashes("").size == 0 and mc.shingle_hashes(" ,;\t\n").size == 0
    assert mc.shingle_hashes("two words").size == 1


def test_estimated_jaccard_tracks_exact_jaccard():
    rng = random.Random(0)
    paras = _paragraphs()
    a = " ".join(paras[:3])
    for edits in (2, 10, 40):
        b = _edit(a, rng, edits)
        exact = mc.exact_jaccard(a, b)
        s = mc.signatures([a, b], num_perm=256)
        est = mc.lean(s[0]).jaccard(mc.lean(s[1]))
        assert abs(est - exact) < 0.1, (edits, est, exact)
        assert est == pytest.approx(float(mc.estimated_jaccard(s[:1], s[1:])[0]))


def test_normalisation_ignores_case_digits_and_punctuation():
    a = "The price was 42 dollars, said Mr. Smith; nobody believed him at all."
    b = "the PRICE was 17 dollars said mr smith nobody believed him at all!!"
    assert mc.exact_jaccard(a, b) == 1.0
    assert np.array_equal(*mc.signatures([a, b]))


def test_lsh_parameters_match_datasketch():
    from datasketch.lsh import _optimal_param

    assert mc.optimal_bands(0.8, 128) == (9, 13)
    for t, n in ((0.5, 64), (0.7, 128), (0.9, 128)):
        assert mc.optimal_bands(t, n) == _optimal_param(t, n, 0.5, 0.5)


def test_band_keys_equal_exactly_when_bands_equal():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(3, 128), dtype=np.uint32)
    sig[1, :13] = sig[0, :13]  # band 0 shared by docs 0 and 1
    sig[2, 13:26] = sig[0, :13]  # same values, but in band 1
    keys = mc.band_keys(sig, 9, 13)
    assert keys.shape == (3, 9)
    assert keys[0, 0] == keys[1, 0]
    assert (keys[0, 1:] != keys[1, 1:]).all()
    assert keys[2, 1] != keys[0, 0]


def test_union_find_components_and_roots():
    a = np.array([5, 4, 3, 2, 8, 9])
    b = np.array([4, 3, 2, 1, 9, 7])
    root = union_find(10, a, b)
    assert root.tolist() == [0, 1, 1, 1, 1, 1, 6, 7, 7, 7]
    # against scipy on a random graph
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(1)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    root = union_find(n, a, b)
    _, labels = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)), directed=False)
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        assert (root[members] == members.min()).all()


def test_bad_minhash_config_fails_early():
    with pytest.raises(ConfigError, match="threshold"):
        load_config(None, {"minhash.threshold": 1.5})
    with pytest.raises(ConfigError, match="bands and minhash.rows"):
        load_config(None, {"minhash.bands": 10})
    with pytest.raises(ConfigError, match="keep"):
        load_config(None, {"minhash.keep": "random"})


# --- the shuffle end to end ------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """Distinct English pages plus planted near duplicates, spread over many shards:
    a pair (original + 1 copy), a triple, and a copy placed before its original."""
    rng = random.Random(7)
    paras = _paragraphs()
    rng.shuffle(paras)
    pages = [(f"https://site{i}.example/p", "\n".join(paras[4 * i : 4 * i + 4])) for i in range(40)]
    copies = {
        3: [(_edit(pages[3][1], rng, 3), 30)],
        10: [(_edit(pages[10][1], rng, 2), 20), (_edit(pages[10][1], rng, 3), 35)],
        25: [(_edit(pages[25][1], rng, 2), 1)],  # the copy comes first in input order
    }
    jac = [mc.exact_jaccard(pages[src][1].split("\n", 1)[1], body.split("\n", 1)[1])  # line 1 is the title
           for src, cps in copies.items() for body, _ in cps]
    assert min(jac) > 0.85
    order = [(url, body) for url, body in pages]
    for src, cps in copies.items():
        for body, at in cps:
            order.insert(at, (f"https://mirror.example/{src}", body))
    path = write_wet(tmp_path_factory.mktemp("planted") / "planted.warc.wet.gz", order)
    return path, {"n": len(order), "removed": 4, "clusters": 3, "jaccard": jac}


def _config(out: Path, inputs: list[Path], **overrides):
    o = {"input.paths": [str(p) for p in inputs], "output.dir": str(out), "executor.progress": False,
         "input.split_mb": 0.01, "dedup.enabled": False, "langid.threshold": 0.0}
    o.update(overrides)
    return load_config(ROOT / "configs" / "default.yaml", o)


def _table(out: Path) -> list[dict]:
    rows = read_rows(out, ["id", "url", "raw_content", "dup_cluster_id", "dup_cluster_size"]).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def test_planted_near_duplicates_removed_across_shards(tmp_path, planted):
    wet, truth = planted
    stats = run_pipeline(_config(tmp_path / "out", [wet], **{"executor.workers": 2}))
    assert stats.shards >= 4
    assert stats.docs_read == truth["n"] and stats.identity_holds()
    mh = stats.steps["minhash"]
    assert mh.dropped == {"near_duplicate": truth["removed"]}
    assert mh.counters["duplicate_clusters"] == truth["clusters"]
    assert mh.counters["docs_in_clusters"] == truth["removed"] + truth["clusters"]
    rows = _table(tmp_path / "out")
    assert len(rows) == truth["n"] - truth["removed"] == stats.docs_kept
    # keep = first in input order: every kept member is a site page, except
    # page 25 whose copy came first
    kept_dups = [r for r in rows if r["dup_cluster_size"] > 1]
    assert sorted((r["url"], r["dup_cluster_size"]) for r in kept_dups) == [
        ("https://mirror.example/25", 2), ("https://site10.example/p", 3), ("https://site3.example/p", 2)]
    assert not any(r["url"] in ("https://site25.example/p",) for r in rows)
    assert sum(r["url"].startswith("https://mirror.example/") for r in rows) == 1
    # singletons: their own position as cluster id, all ids distinct
    assert all(r["dup_cluster_size"] == 1 for r in rows if r not in kept_dups)
    assert len({r["dup_cluster_id"] for r in rows}) == len(rows)
    # per shard stats add up, and hold the minhash step
    shard_stats = [Stats.load(f) for f in sorted((tmp_path / "out" / "stats" / "shards").glob("*.json"))]
    assert len(shard_stats) == stats.shards
    for s in shard_stats:
        s.check()
        assert "minhash" in s.steps
    assert sum(s.steps["minhash"].dropped["near_duplicate"] for s in shard_stats) == truth["removed"]
    assert not list((tmp_path / "out").rglob(".part-*.tmp"))


def test_duplicated_pages_keep_one_intact_copy_with_line_dedup_on(tmp_path, planted):
    """Documents are resolved before line dedup: each planted group ends with exactly one
    document, whose text is the page's whole text (line dedup found nothing to strip,
    since the pages share no lines with other, different pages)."""
    wet, truth = planted
    from ccpipe.io.wet import read_wet

    source = {d.id: d.raw_content for d in read_wet(str(wet), Stats())}
    stats = run_pipeline(_config(tmp_path / "out", [wet], **{"dedup.enabled": True, "executor.workers": 2}))
    rows = _table(tmp_path / "out")
    assert stats.steps["minhash"].dropped == {"near_duplicate": truth["removed"]}
    assert len(rows) == truth["n"] - truth["removed"]
    assert all(r["raw_content"] == source[r["id"]] for r in rows)  # every kept page intact
    assert sorted(r["dup_cluster_size"] for r in rows if r["dup_cluster_size"] > 1) == [2, 2, 3]
    assert list(stats.steps)[:2] == ["minhash", "line_dedup"]
    # CCNet's order (line dedup alone): the copies strip each other's shared lines
    ccnet = run_pipeline(_config(tmp_path / "ccnet", [wet], **{"dedup.enabled": True, "minhash.enabled": False}))
    members = ("https://site3.example/p", "https://site10.example/p", "https://site25.example/p")
    group_rows = [r for r in _table(tmp_path / "ccnet") if r["url"] in members or "mirror.example" in r["url"]]
    assert not any(r["raw_content"] == source[r["id"]] for r in group_rows)  # no intact copy of any group
    assert ccnet.steps["line_dedup"].counters["lines_out"] < ccnet.steps["line_dedup"].counters["lines_in"]


def test_the_same_input_twice_gives_the_rows_of_once(tmp_path):
    """The 2017 excerpt and its single-gzip-stream twin hold the same 170 records: given
    together, one copy of each survives, with exactly the rows of one file alone."""
    files = [data_path("wet", "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz"),
             data_path("wet", "CC-MAIN-2017-30-00008.excerpt.single-gzip-stream.wet.gz")]
    over = {"dedup.enabled": True, "input.split_mb": 0.0, "executor.workers": 2, "langid.threshold": 0.5}
    once = run_pipeline(_config(tmp_path / "once", files[:1], **over))
    twice = run_pipeline(_config(tmp_path / "twice", files, **over))
    assert once.docs_kept > 140
    key = lambda r: (r["id"], r["raw_content"], r["url"])  # noqa: E731
    assert sorted(map(key, _table(tmp_path / "twice"))) == sorted(map(key, _table(tmp_path / "once")))
    assert twice.docs_kept == once.docs_kept and twice.steps["minhash"].dropped["near_duplicate"] >= 157


def test_keep_longest_and_threshold(tmp_path, planted):
    wet, truth = planted
    run_pipeline(_config(tmp_path / "long", [wet], **{"minhash.keep": "longest"}))
    rows = _table(tmp_path / "long")
    assert len(rows) == truth["n"] - truth["removed"]
    strict = run_pipeline(_config(tmp_path / "strict", [wet], **{"minhash.threshold": 0.995, "minhash.verify_threshold": 0.995}))
    expected = sum(j >= 0.995 for j in truth["jaccard"])
    assert expected < truth["removed"]
    assert strict.steps["minhash"].dropped.get("near_duplicate", 0) == expected
    off = run_pipeline(_config(tmp_path / "off", [wet], **{"minhash.enabled": False}))
    assert "minhash" not in off.steps and off.docs_kept == truth["n"]
    one = shard_files(tmp_path / "off")[0]
    assert "dup_cluster_id" not in pq.read_schema(one).names


def test_same_rows_for_worker_counts_and_failed_finalize_resumes(tmp_path, planted):
    wet, _ = planted
    a = run_pipeline(_config(tmp_path / "a", [wet], **{"executor.workers": 1}))
    assert a.shards >= 4
    # a directory where shard 2's final file must go makes its last phase fail
    part = next(f for f in shard_files(tmp_path / "a") if f.name == "part-00002.parquet").relative_to(tmp_path / "a")
    blocker = tmp_path / "b" / part
    blocker.mkdir(parents=True)
    from ccpipe.executors.base import TaskFailed

    with pytest.raises(TaskFailed, match="shard|part-00002|IsADirectory"):
        run_pipeline(_config(tmp_path / "b", [wet], **{"executor.workers": 2, "executor.max_retries": 0,
                                                        "minhash.buckets": 3}))
    staged = sorted((tmp_path / "b" / "_work" / "stage" / "stats").glob("*.json"))
    assert staged, "perplexity models are needed: buckets are placed in the last phase"
    done = sorted((tmp_path / "b" / "stats" / "shards").glob("*.json"))
    assert len(staged) + len(done) == a.shards  # the main pass finished for every shard
    assert "part-00002.json" not in [f.name for f in done]
    before = {f: f.stat().st_mtime_ns for f in done}
    blocker.rmdir()
    b = run_pipeline(_config(tmp_path / "b", [wet], **{"executor.workers": 2, "executor.max_retries": 0,
                                                       "minhash.buckets": 3,
                                                       "output.keep_work": True}))  # staged stats compared below
    assert {f: f.stat().st_mtime_ns for f in before} == before  # nothing finished was redone
    assert _table(tmp_path / "a") == _table(tmp_path / "b")
    assert b.to_dict()["documents"] == a.to_dict()["documents"]
    run = json.loads((tmp_path / "b" / "stats" / "run.json").read_text())
    assert run["identity_holds"] and run["steps"]["minhash"]["dropped"] == {"near_duplicate": 4}
