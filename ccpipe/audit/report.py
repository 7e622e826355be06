"""One self-contained HTML audit report of a run (plots embedded as PNG data URIs, no scripts).

    from ccpipe.audit import build_report
    html = build_report("out/run", compare="out/other_run")

Sections: summary, funnel with drop reasons, language mix, perplexity per language with the
bucket cutoffs, is-reference scores, line-dedup and MinHash statistics, the most atypical
documents in embedding space (geometry's validated measure), the score model's held-out
validation, embedding-space near-duplicate clusters, and optionally a side-by-side
comparison with a second run.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ccpipe.audit import plots
from ccpipe.audit.data import AuditConfig, RunData, load_run

log = logging.getLogger(__name__)

NOT_COMPUTED = "not computed in this run"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f5f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}.na{color:#8a5a00;background:#fff6e5;padding:.4em .7em;border-left:3px solid #d9822b}
.meta{color:#666;font-size:.85em}code{background:#f3f3f3;padding:0 .2em}nav a{margin-right:.8em}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _n(x: float | int) -> str:
    if isinstance(x, float):
        return f"{x:,.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return f"{x:,}"


def _pct(a: float, b: float) -> str:
    return f"{a / b:.1%}" if b else "-"


def table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(_n(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool) else f"<td>{_e(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def na(what: str, hint: str = "") -> str:
    return f'<p class="na">{_e(what)}: {NOT_COMPUTED}.{(" " + _e(hint)) if hint else ""}</p>'


# -- sections -------------------------------------------------------------------------------
def funnel_stages(stats: dict) -> tuple[list[str], list[int], list[int]]:
    stages, docs, chars = ["read"], [stats["documents"]["read"]], [stats["characters"]["read"]]
    for name, st in stats["steps"].items():
        stages.append(name)
        docs.append(st["docs_out"])
        chars.append(st["chars_out"])
    return stages, docs, chars


def section_summary(d: RunData) -> str:
    s = d.stats
    docs, chars = s["documents"], s["characters"]
    rows = [
        ["documents read", docs["read"], "100%"],
        ["documents kept", docs["kept"], _pct(docs["kept"], docs["read"])],
        ["documents dropped", docs["dropped"], _pct(docs["dropped"], docs["read"])],
        ["documents errored (unparsable)", docs["errored"], _pct(docs["errored"], docs["read"])],
        ["characters read", chars["read"], "100%"],
        ["characters kept", chars["kept"], _pct(chars["kept"], chars["read"])],
        ["shards", s.get("shards", 0), ""],
    ]
    ok = "holds" if s.get("identity_holds", True) else "BROKEN: documents went missing"
    return "<h2 id='summary'>Summary</h2>" + table(["", "count", "share"], rows) + f"<p>read = kept + dropped + errored: <b>{_e(ok)}</b></p>"


def section_funnel(d: RunData) -> str:
    s = d.stats
    stages, docs, chars = funnel_stages(s)
    out = ["<h2 id='funnel'>Funnel</h2>", img(plots.funnel(stages, docs, chars), "documents and characters through the pipeline")]
    rows = [[name, st["docs_in"], st["docs_out"], _pct(st["docs_out"], st["docs_in"]), st["chars_in"], st["chars_out"], _pct(st["chars_out"], st["chars_in"]), round(st.get("seconds", 0.0), 2)]
            for name, st in s["steps"].items()]
    out.append(table(["step", "docs in", "docs out", "kept", "chars in", "chars out", "kept", "seconds"], rows))
    drops = sorted(s["dropped"].items(), key=lambda kv: -kv[1])
    errs = sorted(s.get("errors", {}).items(), key=lambda kv: -kv[1])
    if drops or errs:
        read = s["documents"]["read"]
        rows = [[k, v, _pct(v, read)] for k, v in drops] + [[f"error/{k}", v, _pct(v, read)] for k, v in errs]
        out.append("<h3>Drop reasons</h3>" + table(["step/reason", "documents", "share of read"], rows))
        out.append(img(plots.hbar([r[0] for r in rows], [r[1] for r in rows], "documents dropped by reason", "documents", plots.GREY), "drop reasons"))
    else:
        out.append("<p>No document was dropped.</p>")
    if s.get("file_errors"):
        out.append("<h3>File problems</h3>" + table(["problem", "count"], [[k, v] for k, v in s["file_errors"].items()]))
    return "".join(out)


def language_counts(d: RunData) -> tuple[list[str], list[int], list[int]]:
    t = d.docs
    if "language" in t.column_names and t.num_rows:
        langs = t.column("language").to_pylist()
        lengths = t.column("length").to_pylist() if "length" in t.column_names else [0] * len(langs)
        dc, cc = Counter(langs), Counter()
        for lang, n in zip(langs, lengths):
            cc[lang] += n or 0
        order = [k for k, _ in dc.most_common()]
        return [str(k) for k in order], [dc[k] for k in order], [cc[k] for k in order]
    kb = d.stats.get("kept_by_language", {})
    return list(kb), list(kb.values()), [0] * len(kb)


def section_languages(d: RunData) -> str:
    langs, docs, chars = language_counts(d)
    if not langs:
        return "<h2 id='languages'>Language mix</h2>" + na("language mix", "no kept documents")
    out = ["<h2 id='languages'>Language mix</h2>", img(plots.language_mix(langs[:25], docs[:25], chars[:25]), "language mix")]
    td, tc = sum(docs), sum(chars)
    out.append(table(["language", "documents", "share", "characters", "share"], [[l, n, _pct(n, td), c, _pct(c, tc)] for l, n, c in zip(langs, docs, chars)]))
    return "".join(out)


def section_perplexity(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='perplexity'>Perplexity</h2>"]
    if not d.has("perplexity"):
        return out[0] + na("perplexity", "enable the perplexity step (`ccpipe models build-defaults`, then rerun).")
    t = d.docs
    pp = np.asarray(t.column("perplexity").fill_null(-1).to_numpy(zero_copy_only=False), dtype=float)
    langs = np.asarray(t.column("language").to_pylist() if "language" in t.column_names else ["?"] * len(pp), dtype=object)
    scored = pp >= 0
    order = [k for k, _ in Counter(langs[scored].tolist()).most_common(cfg.max_languages_plotted)]
    panels = []
    for lang in order:
        lines = []
        cut = (d.cutoffs or {}).get(lang)
        if cut:
            lines = [(cut[d.head_percentile], f"p{d.head_percentile}"), (cut[d.middle_percentile], f"p{d.middle_percentile}")]
        panels.append((lang, pp[scored & (langs == lang)], lines))
    out.append(img(plots.histograms(panels, "perplexity", log_x=True), "perplexity histograms per language"))
    if d.cutoffs:
        out.append(f"<p class='meta'>Dashed lines: bucket cutoffs (head &lt; p{d.head_percentile} &le; middle &lt; p{d.middle_percentile} &le; tail) from <code>{_e(d.cutoff_source)}</code>.</p>")
    else:
        out.append(na("bucket cutoffs", "no cutoff table found (`ccpipe models cutoffs`)."))
    unscored = int((~scored).sum())
    if unscored:
        out.append(f"<p>{unscored:,} kept documents have no perplexity (no model for their language).</p>")
    if d.has("bucket"):
        b = Counter(zip(langs.tolist(), t.column("bucket").to_pylist()))
        names = sorted({k[1] for k in b}, key=lambda x: ["head", "middle", "tail"].index(x) if x in ("head", "middle", "tail") else 9)
        rows = [[lang, *[b.get((lang, n), 0) for n in names]] for lang in sorted({k[0] for k in b}, key=lambda l: -sum(v for k, v in b.items() if k[0] == l))]
        out.append("<h3>Buckets</h3>" + table(["language", *names], rows))
    return "".join(out)


def section_ref(d: RunData) -> str:
    out = "<h2 id='ref'>Is-reference score</h2>"
    if not d.has("ref_score"):
        return out + na("is-reference score", "enable the is-reference classifier (`ccpipe models build-defaults`).")
    t = d.docs
    vals = np.asarray(t.column("ref_score").to_numpy(zero_copy_only=False), dtype=float)
    panels = [("all kept documents", vals, [(0.5, "0.5")])]
    if d.has("bucket"):
        buckets = np.asarray(t.column("bucket").to_pylist(), dtype=object)
        for b in ("head", "middle", "tail"):
            if (buckets == b).any():
                panels.append((f"bucket {b}", vals[buckets == b], []))
    fin = vals[np.isfinite(vals)]
    q = np.quantile(fin, [0.1, 0.5, 0.9]) if len(fin) else [np.nan] * 3
    return out + img(plots.histograms(panels, "P(reference-like)"), "is-reference score distribution") + table(
        ["documents", "p10", "median", "p90", "share >= 0.5"], [[len(fin), float(q[0]), float(q[1]), float(q[2]), _pct(int((fin >= 0.5).sum()), len(fin))]])


def section_dedup(d: RunData) -> str:
    s = d.stats
    out = ["<h2 id='dedup'>Deduplication</h2><h3>Line dedup (CCNet)</h3>"]
    ld = next((st for name, st in s["steps"].items() if "line" in name and "dedup" in name), None)
    if ld is None:
        out.append(na("line dedup"))
    else:
        c = ld.get("counters", {})
        rows = [["documents in", ld["docs_in"]], ["documents dropped (every line a duplicate)", sum(ld["dropped"].values())], ["characters in", ld["chars_in"]], ["characters out", ld["chars_out"]]]
        if "lines_in" in c:
            rows += [["lines in", c["lines_in"]], ["lines out", c.get("lines_out", 0)], ["lines removed", f"{1 - c.get('lines_out', 0) / c['lines_in']:.1%}" if c["lines_in"] else "-"]]
        rows += [[k, v] for k, v in c.items() if k not in ("lines_in", "lines_out")]
        out.append(table(["", "value"], rows))
    out.append("<h3>MinHash near-duplicate clusters</h3>")
    mh = {name: st for name, st in s["steps"].items() if "minhash" in name or ("dedup" in name and "line" not in name)}
    if mh:
        out.append(table(["step", "docs in", "docs out", "dropped"], [[name, st["docs_in"], st["docs_out"], ", ".join(f"{k}: {v}" for k, v in st["dropped"].items()) or "0"] for name, st in mh.items()]))
        counters = [[f"{name}/{k}", v] for name, st in mh.items() for k, v in st.get("counters", {}).items()]
        if counters:
            out.append(table(["counter", "value"], counters))
    if d.has("dup_cluster_size"):
        t = d.docs
        sizes = np.asarray(t.column("dup_cluster_size").fill_null(1).to_numpy(zero_copy_only=False), dtype=float)
        cid = t.column("dup_cluster_id").to_pylist() if "dup_cluster_id" in t.column_names else None
        in_cl = sizes >= 2
        n_clusters = len({c for c, z in zip(cid, sizes) if z >= 2 and c is not None}) if cid is not None else int(in_cl.sum())
        out.append(table(["", "value"], [["kept documents from a cluster of size >= 2", int(in_cl.sum())], ["clusters", n_clusters],
                                          ["largest cluster", int(sizes.max()) if len(sizes) else 0], ["mean cluster size (size >= 2)", float(sizes[in_cl].mean()) if in_cl.any() else 0.0]]))
        if in_cl.any():
            out.append(img(plots.histograms([("cluster size of kept documents", sizes[in_cl], [])], "documents per cluster", cols=1), "MinHash cluster sizes"))
    elif not mh:
        out.append(na("MinHash clusters", "enable the MinHash dedup step."))
    return "".join(out)


def _titles(d: RunData) -> dict[str, tuple[str, str, str]]:
    t = d.docs
    cols = {c: t.column(c).to_pylist() if c in t.column_names else [""] * t.num_rows for c in ("title", "url", "language")}
    return {i: (cols["title"][k] or "", cols["url"][k] or "", cols["language"][k] or "") for k, i in enumerate(t.column("id").to_pylist())}


def section_geometry(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='density'>Atypical documents in embedding space</h2>"]
    g = d.geometry
    if g is None:
        return (out[0] + na("atypical documents", d.geometry_note) + "<h2 id='score'>Score model</h2>" + na("score model", d.geometry_note)
                + "<h2 id='clusters'>Embedding-space near-duplicates</h2>" + na("embedding-space clusters", d.geometry_note))
    info = _titles(d)
    a = g.atypicality
    if a is not None and len(a.score):
        out.append(f"<p>Atypicality: {html.escape(a.detail)} (method <code>{a.method}</code>, over {len(a.score):,} documents). "
                   "Validated against labelled junk (boilerplate, code, number tables, keyword spam) among clean prose: "
                   "see docs/geometry.md. The score model's |s(x)| is not used: it grows with density.</p>")
        q = np.quantile(a.score, [0.5, 0.99])
        out.append(img(plots.histograms([("atypicality", a.score, [(float(q[0]), "median"), (float(q[1]), "p99")])], a.method, cols=1), "atypicality histogram"))
        rows = [[i, info.get(i, ("", "", ""))[2], v, info.get(i, ("", "", ""))[0][:80], info.get(i, ("", "", ""))[1][:80]] for i, v in a.top(cfg.top_atypical)]
        out.append("<h3>Most atypical documents</h3>" + table(["id", "language", a.method, "title", "url"], rows))
    out.append("<h2 id='score'>Score model</h2>")
    r = g.score_report
    if r is None:
        out.append(na("score model", g.note))
    else:
        verdict = ("confirmed on held-out data" if r["metric_sigma_confirmed"]
                   else "<b>not confirmed</b>: no rung beat the Gaussian fit on held-out data, so the metric reads (nearly) the Gaussian's score")
        out.append(f"<p>The metric reads the score at sigma = {r['metric_sigma']:.4g} ({verdict}). Held-out denoising loss per noise level, "
                   f"against the affine-Gaussian baseline (trained on {r['n_train']:,} documents, {r['n_val']:,} held out).</p>")
        out.append(table(["sigma", "model", "Gaussian baseline", "gamma", "at or below baseline"],
                         [[f"{x['sigma']:.4g}", f"{x['model']:.5f}", f"{x['gaussian']:.5f}", f"{x['gamma']:.2f}", "yes" if x["at_or_below_gaussian"] else "NO"]
                          for x in r["heldout_loss"]]))
    out.append("<h2 id='clusters'>Embedding-space near-duplicates</h2>")
    out.append(f"<p>Documents joined when the cosine of their embeddings is at least {cfg.near_dup_cosine} (among each document's {cfg.near_dup_neighbours} nearest neighbours; {g.pairs_checked:,} pairs checked), clusters = connected components.</p>")
    if not g.clusters:
        out.append("<p>No near-duplicate clusters in embedding space.</p>")
    else:
        sizes = [len(c) for c in g.clusters]
        out.append(table(["clusters", "documents in clusters", "largest"], [[len(sizes), sum(sizes), max(sizes)]]))
        rows = [[len(c), " | ".join((info.get(i, ("", "", ""))[0] or i)[:60] for i in c[:3])] for c in g.clusters[: cfg.max_clusters_listed]]
        out.append(table(["size", "sample titles"], rows))
    return "".join(out)


def section_compare(a: RunData, b: RunData) -> str:
    na_, nb_ = a.run.name, b.run.name
    if na_ == nb_:
        na_, nb_ = str(a.run), str(b.run)
    sa, sb = a.stats, b.stats
    out = [f"<h2 id='compare'>Comparison: {_e(na_)} vs {_e(nb_)}</h2>"]
    rows = []
    for label, fa, fb in [
        ("documents read", sa["documents"]["read"], sb["documents"]["read"]),
        ("documents kept", sa["documents"]["kept"], sb["documents"]["kept"]),
        ("documents dropped", sa["documents"]["dropped"], sb["documents"]["dropped"]),
        ("documents errored", sa["documents"]["errored"], sb["documents"]["errored"]),
        ("characters read", sa["characters"]["read"], sb["characters"]["read"]),
        ("characters kept", sa["characters"]["kept"], sb["characters"]["kept"]),
    ]:
        rows.append([label, fa, fb, fb - fa])
    rows.append(["document keep rate", _pct(sa["documents"]["kept"], sa["documents"]["read"]), _pct(sb["documents"]["kept"], sb["documents"]["read"]), ""])
    rows.append(["character keep rate", _pct(sa["characters"]["kept"], sa["characters"]["read"]), _pct(sb["characters"]["kept"], sb["characters"]["read"]), ""])
    out.append(table(["", na_, nb_, "difference"], rows))
    reasons = sorted(set(sa["dropped"]) | set(sb["dropped"]))
    if reasons:
        ra, rb = max(sa["documents"]["read"], 1), max(sb["documents"]["read"], 1)
        out.append(img(plots.compare_bars(reasons, [sa["dropped"].get(r, 0) / ra for r in reasons], [sb["dropped"].get(r, 0) / rb for r in reasons], (na_, nb_), "dropped, share of documents read", percent=True), "drop reasons compared"))
    la, da, _ = language_counts(a)
    lb, db, _ = language_counts(b)
    langs = [l for l, _ in (Counter(dict(zip(la, da))) + Counter(dict(zip(lb, db)))).most_common(15)]
    if langs:
        ta, tb = max(sum(da), 1), max(sum(db), 1)
        ma, mb = dict(zip(la, da)), dict(zip(lb, db))
        out.append(img(plots.compare_bars(langs, [ma.get(l, 0) / ta for l in langs], [mb.get(l, 0) / tb for l in langs], (na_, nb_), "language mix, share of kept documents", percent=True), "language mix compared"))
    for what, col in (("perplexity", "perplexity"), ("is-reference score", "ref_score")):
        if a.has(col) and b.has(col):
            va = np.asarray(a.docs.column(col).to_numpy(zero_copy_only=False), dtype=float)
            vb = np.asarray(b.docs.column(col).to_numpy(zero_copy_only=False), dtype=float)
            out.append(img(plots.histograms([(f"{what}: {na_}", va[va >= 0], []), (f"{what}: {nb_}", vb[vb >= 0], [])], what, log_x=col == "perplexity", cols=2), f"{what} compared"))
        else:
            missing = [r.run.name for r in (a, b) if not r.has(col)]
            out.append(na(f"{what} comparison", f"missing in {', '.join(missing)}."))
    return "".join(out)


def build_report(run: str | os.PathLike[str], compare: str | os.PathLike[str] | None = None, config: AuditConfig | None = None) -> str:
    """The whole report as one HTML string."""
    cfg = config or AuditConfig()
    a = load_run(run, cfg)
    b = load_run(compare, cfg, with_geometry=False) if compare is not None else None
    sections = [section_summary(a), section_funnel(a), section_languages(a), section_perplexity(a, cfg), section_ref(a), section_dedup(a), section_geometry(a, cfg)]
    nav = ["summary", "funnel", "languages", "perplexity", "ref", "dedup", "density", "clusters"]
    if b is not None:
        sections.append(section_compare(a, b))
        nav.append("compare")
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>ccpipe audit: {_e(a.run.name)}</title>"
            f"<style>{CSS}</style></head><body>")
    intro = (f"<h1>Audit of run <code>{_e(a.run)}</code></h1><p class='meta'>generated {when} by <code>ccpipe audit</code>"
             + (f"; compared with <code>{_e(b.run)}</code>" if b is not None else "") + "</p>"
             + "<nav>" + "".join(f"<a href='#{n}'>{n}</a>" for n in nav) + "</nav>"
             + "".join(f"<p class='na'><b>{_e(r.run)}</b>: {_e(r.unfinished)}</p>"
                       for r in (a, b) if r is not None and r.unfinished))
    return head + intro + "".join(sections) + "</body></html>\n"


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str], compare: str | os.PathLike[str] | None = None, config: AuditConfig | None = None) -> Path:
    """Build the report and write it atomically (tmp file + rename)."""
    text = build_report(run, compare, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    log.info("wrote %s (%d kB)", out, len(text) // 1024)
    return out
