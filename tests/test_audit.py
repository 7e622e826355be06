"""``ccpipe audit``: the report's figures against the run's own files, optional parts, CLI."""

from __future__ import annotations

import json
from html import unescape
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccpipe.audit import AuditConfig, build_report, load_run
from ccpipe.audit.report import NOT_COMPUTED
from ccpipe.cli import main as ccpipe_main
from ccpipe.io.dataset import partition_name, partition_path, partition_values, read_rows, shard_files
from realrun import DATA, pipeline_run


@pytest.fixture(scope="module")
def other_run(tmp_path_factory: pytest.TempPathFactory, real_run: Path) -> Path:
    """A second, smaller run (English excerpt only, no geometry) to compare with."""
    return pipeline_run(tmp_path_factory.mktemp("other"), DATA, name="en_only", files=("CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz",))


@pytest.fixture(scope="module")
def report(real_run: Path, other_run: Path) -> str:
    return build_report(real_run, compare=other_run)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_report_is_self_contained(report: str) -> None:
    imgs = re.findall(r'<img src="([^"]+)"', report)
    assert len(imgs) >= 6 and all(u.startswith("data:image/png;base64,") for u in imgs)
    assert "<script" not in report and not re.search(r'(src|href)="https?:', report)
    assert report.startswith("<!DOCTYPE html>")


def test_funnel_and_drop_reasons_match_the_run_stats(report: str, real_run: Path) -> None:
    stats = json.loads((real_run / "stats" / "run.json").read_text())
    t = text_of(report)
    d = stats["documents"]
    assert f"documents read {d['read']:,} 100%" in t
    assert f"documents kept {d['kept']:,} {d['kept'] / d['read']:.1%}" in t
    for name, st in stats["steps"].items():
        assert f"{name} {st['docs_in']:,} {st['docs_out']:,}" in t
    assert stats["dropped"], "the real excerpts do drop documents"
    for reason, n in stats["dropped"].items():
        assert f"{reason} {n:,} {n / d['read']:.1%}" in t
    assert "read = kept + dropped + errored: holds" in t


def test_language_mix_counts_kept_documents(report: str, real_run: Path) -> None:
    langs = Counter(read_rows(real_run, ["language"]).column("language").to_pylist())
    t = text_of(report)
    total = sum(langs.values())
    for lang, n in langs.most_common(3):
        assert re.search(rf"\b{lang} {n:,} {n / total:.1%}", t), lang


def stripped_run(src: Path, dst: Path) -> Path:
    """A run as the bare pipeline (dedup + LID) writes it: no perplexity, ref score or MinHash."""
    base = ["id", "url", "title", "raw_content", "language_score", "length", "nlines", "original_length"]
    for p in shard_files(src):
        t = pq.read_table(p)
        v = partition_values(p)
        out = dst / "data" / partition_path(v["language"], None) / f"part-{partition_name(p)}-{p.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t.select([c for c in base if c in t.column_names]), out)
    stats = json.loads((src / "stats" / "run.json").read_text())
    stats["steps"] = {k: v for k, v in stats["steps"].items() if k in ("line_dedup", "lang_id")}
    (dst / "stats").mkdir(parents=True)
    (dst / "stats" / "run.json").write_text(json.dumps(stats))
    return dst


def test_missing_steps_are_said_not_computed(real_run: Path, tmp_path: Path) -> None:
    t = text_of(build_report(stripped_run(real_run, tmp_path / "bare")))
    for what in ("perplexity", "is-reference score", "MinHash clusters", "atypical documents", "score model"):
        assert f"{what}: {NOT_COMPUTED}" in t


def test_steps_present_in_the_real_run_are_plotted(report: str, real_run: Path) -> None:
    names = set(pq.read_schema(next(p for p in shard_files(real_run) if "language=en" in str(p))).names)
    steps = json.loads((real_run / "stats" / "run.json").read_text())["steps"]
    t = text_of(report)
    if "perplexity" in names:
        assert "perplexity histograms per language" in report and f"perplexity: {NOT_COMPUTED}" not in t
    if "ref_score" in names:
        assert "is-reference score distribution" in report
    for name, st in steps.items():
        if "minhash" in name:
            for k, v in st["counters"].items():
                assert f"{name}/{k} {v:,}" in t


def test_atypical_documents_are_the_largest_knn_distances(report: str, real_run: Path) -> None:
    """Independent recomputation: brute-force mean cosine distance to the k nearest others,
    k = max(10, 5% of the documents) (the run is smaller than the 5,000-document reference)."""
    from geometry.store import EmbeddingStore

    store = EmbeddingStore.open(real_run)
    v = np.asarray(store.vectors(), dtype=np.float64)
    assert store.count < 5000
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    k = max(10, round(AuditConfig().atypical_share * store.count))
    knn = (1.0 - np.sort(sims, axis=1)[:, ::-1][:, :k]).mean(axis=1)
    ids = store.ids()
    top = [str(ids[i]) for i in np.argsort(-knn, kind="stable")[:3]]
    section = report[report.index("Most atypical documents"):]
    rows = re.findall(r"<tr><td>(&lt;urn:uuid:[^<]+&gt;)</td>", section)
    assert [r.replace("&lt;", "<").replace("&gt;", ">") for r in rows[:3]] == top
    assert len(rows) >= AuditConfig().top_atypical
    # The score model's validation is in the report: every rung, model against the baseline.
    t = text_of(report)
    assert "The metric reads the score at sigma" in t and "Gaussian baseline" in t


def test_embedding_near_duplicate_clusters(real_run: Path) -> None:
    data = load_run(real_run, AuditConfig(near_dup_cosine=0.9))
    g = data.geometry
    assert g is not None and g.pairs_checked > 0
    from geometry.store import EmbeddingStore

    store = EmbeddingStore.open(real_run)
    vecs = np.asarray(store.vectors())
    row = {d: i for i, d in enumerate(store.ids())}
    for cluster in g.clusters:
        assert len(cluster) >= 2 and len(set(cluster)) == len(cluster)
        # every member has a partner in its cluster at or above the threshold
        v = vecs[[row[i] for i in cluster]]
        sims = v @ v.T
        np.fill_diagonal(sims, -1)
        assert (sims.max(axis=1) >= 0.9 - 1e-6).all()
    # clusters are disjoint
    members = [i for c in g.clusters for i in c]
    assert len(members) == len(set(members))


def test_comparison_section(report: str, real_run: Path, other_run: Path) -> None:
    a = json.loads((real_run / "stats" / "run.json").read_text())["documents"]
    b = json.loads((other_run / "stats" / "run.json").read_text())["documents"]
    t = text_of(report)
    assert "Comparison: run vs en_only" in t
    assert f"documents read {a['read']:,} {b['read']:,} {b['read'] - a['read']:,}" in t
    assert f"documents kept {a['kept']:,} {b['kept']:,} {b['kept'] - a['kept']:,}" in t


def test_run_without_geometry(other_run: Path) -> None:
    t = text_of(build_report(other_run))
    assert f"atypical documents: {NOT_COMPUTED}" in t and "ccpipe-geometry embed" in t
    assert "Comparison" not in t


def test_optional_columns_when_present(tmp_path: Path, real_run: Path) -> None:
    """A run whose shards carry perplexity, bucket, ref_score and MinHash clusters, with a cutoff table."""
    from ccpipe.steps.perplexity import save_cutoffs

    run = tmp_path / "scored"
    (run / "stats").mkdir(parents=True)
    stats = json.loads((real_run / "stats" / "run.json").read_text())
    stats["steps"] = {k: v for k, v in stats["steps"].items() if "minhash" not in k}  # the columns alone must suffice
    (run / "stats" / "run.json").write_text(json.dumps(stats))
    rng = np.random.default_rng(0)
    src = pq.read_table(next(p for p in shard_files(real_run) if "language=en" in str(p)))
    src = src.select([c for c in src.column_names if c not in ("perplexity", "bucket", "ref_score", "dup_cluster_id", "dup_cluster_size")])
    n = src.num_rows
    pp = rng.lognormal(6, 0.5, n)
    cut = sorted(rng.lognormal(6, 0.5, 100).tolist())
    bucket = ["head" if p < cut[30] else "middle" if p < cut[60] else "tail" for p in pp]
    sizes = [3, 3, 3, 2, 2] + [1] * (n - 5)
    cids = ["c1", "c1", "c1", "c2", "c2"] + [None] * (n - 5)
    t = src.append_column("perplexity", pa.array(pp)) \
        .append_column("ref_score", pa.array(rng.uniform(0, 1, n))).append_column("dup_cluster_id", pa.array(cids, pa.string())) \
        .append_column("dup_cluster_size", pa.array(sizes, pa.int64()))
    for b in ("head", "middle", "tail"):  # hive layout: the bucket is the folder
        d = run / "data" / partition_path("en", b)
        d.mkdir(parents=True)
        pq.write_table(t.filter(pa.array([x == b for x in bucket])), d / "part-00000.parquet")
    save_cutoffs({"en": cut}, run / "cutoff.csv")
    html = build_report(run)
    txt = text_of(html)
    assert f"perplexity: {NOT_COMPUTED}" not in txt and "perplexity histograms per language" in html
    assert f"from {run / 'cutoff.csv'}" in txt
    c = Counter(bucket)
    assert f"en {c['head']} {c['middle']} {c['tail']}" in txt
    assert f"is-reference score: {NOT_COMPUTED}" not in txt and "is-reference score distribution" in html
    assert "kept documents from a cluster of size >= 2 5 clusters 2 largest cluster 3" in txt


def test_cli_writes_the_report(real_run: Path, other_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r" / "audit.html"
    rc = ccpipe_main(["audit", str(other_run), "--compare", str(real_run), "-o", str(out), "--top", "5"])
    assert rc == 0 and out.is_file() and str(out) in capsys.readouterr().out
    assert "Comparison: en_only vs run" in text_of(out.read_text())
    assert not list(out.parent.glob(".*tmp*"))  # written atomically
    assert ccpipe_main(["audit", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")]) == 2
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert ccpipe_main(["audit", str(empty), "-o", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


# -- what was dropped and why, domains, lengths, samples, the run itself (issue 17) ---------------
def _section(report: str, anchor: str) -> str:
    """The HTML of one section: from its <h2 id=...> to the next <h2."""
    start = report.index(f"<h2 id='{anchor}'>")
    end = report.find("<h2 ", start + 1)
    return report[start:end if end > 0 else len(report)]


def test_dropped_examples_are_the_runs_first_dropped_documents_with_their_reason(report: str, real_run: Path) -> None:
    from ccpipe.io.dataset import read_dropped

    cfg = AuditConfig()
    sec = _section(report, "dropped")
    stats = json.loads((real_run / "stats" / "run.json").read_text())
    kept = read_dropped(real_run, ["id", "title", "drop_step", "drop_reason", "drop_detail"])
    assert kept.num_rows and stats["dropped"]
    rows = kept.to_pylist()
    t = text_of(sec)
    for reason, n in stats["dropped"].items():
        mine = [r for r in rows if f"{r['drop_step']}/{r['drop_reason']}" == reason]
        assert re.search(rf"{re.escape(reason)} {n:,} [\d.]+% {len(mine):,}", t), reason
        block = sec.split(f"<h3>{reason}</h3>", 1)[1].split("<h3>", 1)[0]
        assert block.count("<tr>") == min(len(mine), cfg.examples_per_reason) + 1  # + the header
        for r in mine[: cfg.examples_per_reason]:
            assert html_escape(r["drop_detail"]) in block and html_escape((r["title"] or "")[:100]) in block
        for r in mine[cfg.examples_per_reason:]:
            assert html_escape(r["drop_detail"]) not in block or any(
                x["drop_detail"] == r["drop_detail"] for x in mine[: cfg.examples_per_reason])
    assert "language " in t and "score" in t and "near duplicate of" in t  # the values that caused the drops


def html_escape(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def test_domain_table_counts_kept_and_dropped_documents(report: str, real_run: Path) -> None:
    from ccpipe.io.dataset import read_dropped

    kept = Counter(read_rows(real_run, ["source_domain"]).column("source_domain").to_pylist())
    dropped = Counter(read_dropped(real_run, ["source_domain"], kind="summary").column("source_domain").to_pylist())
    stats = json.loads((real_run / "stats" / "run.json").read_text())
    assert sum(dropped.values()) == stats["documents"]["dropped"] > 0
    t = text_of(_section(report, "domains"))
    total = kept + dropped
    for dom, n in total.most_common(5):
        assert f"{dom} {kept[dom]:,} {dropped[dom]:,}" in t, dom
    top = max(kept.values()) / sum(kept.values())
    assert f"top 1: {top:.1%}" in t and f"{len(kept):,} domains among kept documents" in t


def test_lengths_kept_and_dropped(report: str, real_run: Path) -> None:
    from ccpipe.audit.report import _n  # the page's number format
    from ccpipe.io.dataset import read_dropped

    t = text_of(_section(report, "lengths"))
    kept = np.asarray(read_rows(real_run, ["length"]).column("length").to_numpy(), float)
    dropped = np.asarray(read_dropped(real_run, ["length"], kind="summary").column("length").to_numpy(), float)
    for name, v in (("kept", kept), ("dropped", dropped)):
        q = np.quantile(v, [0.1, 0.5, 0.9])
        assert f"{name} characters {len(v):,} {_n(float(q[0]))} {_n(float(q[1]))} {_n(float(q[2]))}" in t, (name, q)
    assert "<img" in _section(report, "lengths")


def test_kept_samples_per_partition(report: str, real_run: Path) -> None:
    sec = _section(report, "samples")
    files = shard_files(real_run)
    parts = Counter(partition_name(f) for f in files for _ in range(pq.ParquetFile(f).metadata.num_rows))
    largest = parts.most_common(1)[0][0]
    first = read_rows(real_run, ["title", "raw_content"], files=[next(f for f in files if partition_name(f) == largest)])
    assert html_escape(first.column("raw_content")[0].as_py()[:50]) in sec
    shown = re.findall(r"<tr><td>([^<]+)<br>", sec)
    assert Counter(shown) == {p: min(n, AuditConfig().samples_per_partition) for p, n in parts.most_common(AuditConfig().max_partitions_sampled)}


def test_run_section_has_version_timings_inputs_and_config(report: str, real_run: Path) -> None:
    import ccpipe

    info = json.loads((real_run / "stats" / "run_info.json").read_text())
    sec = _section(report, "run")
    t = text_of(sec)
    inv = info["invocations"][-1]
    assert inv["ccpipe_version"] == ccpipe.__version__ and f"{inv['started']} {inv['finished']}" in t
    for x in info["inputs"]:
        assert x["path"] in t and f"{x['bytes']:,}" in t
    assert "wall seconds" in t and "<details><summary>the run's config" in sec
    assert html_escape('"keep_dropped": "sample"') in sec


def test_minhash_shown_as_cluster_sizes_and_clusters_side_by_side(report: str, real_run: Path) -> None:
    from ccpipe.io.dataset import read_dropped

    sec = _section(report, "dedup")
    mh = [r for r in read_dropped(real_run, ["url", "drop_step", "dup_kept_id"]).to_pylist() if r["drop_step"] == "minhash"]
    assert mh, "the real excerpts have near duplicates"
    assert "near-duplicate clusters by size" in sec or "MinHash cluster sizes" in sec
    assert "Clusters side by side" in sec and html_escape(mh[0]["url"][:90]) in sec
    assert "as MinHash saw it" in sec  # the kept member's text from before line dedup (dropped/cluster_kept/)
    assert "identical texts" in sec  # the real excerpts' duplicates are exact copies
    assert "<details><summary>MinHash counters" in sec  # the raw counters folded away


def test_near_duplicate_cluster_side_by_side_highlights_the_edited_line(tmp_path: Path) -> None:
    from tests.conftest import near_duplicate_run

    run, edited = near_duplicate_run(tmp_path)
    sec = _section(build_report(run), "dedup")
    assert "Clusters side by side" in sec and "?copy=1" in sec  # the copy is the removed member
    assert f"<span class='ins'>{html_escape(edited)}</span>" in sec  # its edited line highlighted on its side
    assert sec.count("<span class='del'>") == 1  # and the one original line it replaced on the kept side
    assert "1 of " in text_of(sec) and "lines differ" in text_of(sec)


def test_file_problems_name_the_file(tmp_path: Path, real_run: Path) -> None:
    from ccpipe.config import load_config
    from ccpipe.pipeline import run_pipeline
    from tests.conftest import ROOT

    empty = tmp_path / "empty.warc.wet.gz"
    empty.write_bytes(b"")
    cfg = load_config(ROOT / "configs" / "default.yaml", {
        "input.paths": [str(DATA / "wet" / "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz"), str(empty)],
        "input.on_error": "skip", "output.dir": str(tmp_path / "out"), "executor.progress": False, "executor.workers": 1,
        "perplexity.enabled": False, "ref.enabled": False, "minhash.enabled": False})
    stats = run_pipeline(cfg)
    assert str(empty) in stats.file_problems
    t = text_of(build_report(tmp_path / "out"))
    assert f"{empty} {stats.file_problems[str(empty)]}" in t


def test_page_size_is_bounded_by_the_samples_not_the_run(real_run: Path, tmp_path: Path) -> None:
    """Every text the page embeds is cut to a configured length and every list to a configured
    count, so a run that keeps every dropped document gives a page no larger per section."""
    cfg = AuditConfig(text_chars=120, examples_per_reason=1, samples_per_partition=1, clusters_shown=1, cluster_chars=200)
    html = build_report(real_run, config=cfg)
    for cell in re.findall(r"<div class='txt'>(.*?)</div>", html, flags=re.S):
        plain = unescape(re.sub(r"<[^>]+>", "", cell))
        assert len(plain.split(" … (+")[0]) <= 200 + 10  # cluster texts are cut at 200, the others at 120
    sec = _section(html, "dropped")
    assert all(b.count("<tr>") <= 2 for b in sec.split("<h3>")[1:])
