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
import difflib
import html
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ccpipe.audit import plots
from ccpipe.audit.data import AuditConfig, RunData, cluster_kept_texts, dropped_texts, kept_texts, load_run

log = logging.getLogger(__name__)

NOT_COMPUTED = "not computed in this run"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f5f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}.na{color:#8a5a00;background:#fff6e5;padding:.4em .7em;border-left:3px solid #d9822b}
.meta{color:#666;font-size:.85em}code{background:#f3f3f3;padding:0 .2em}nav a{margin-right:.8em}
.txt{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.8em;max-height:10em;overflow:auto;background:#fafafa;padding:.3em}
table.ex{width:100%;table-layout:fixed}table.ex td,table.ex th{vertical-align:top;overflow-wrap:anywhere}table.side td{width:50%}
table.side .txt{max-height:24em}
table.samples th:first-child{width:9em}
.del{background:#fbd5d5}.ins{background:#d3f2d3}pre{font-size:.8em;background:#fafafa;padding:.5em;overflow:auto;max-height:30em}
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
    if s.get("file_problems"):
        probs = list(s["file_problems"].items())
        more = f"<p>... and {len(probs) - 200:,} more files with problems (stats/run.json names them all).</p>" if len(probs) > 200 else ""
        out.append("<h3>File problems</h3>" + table(["file", "problem"], [[k, v] for k, v in probs[:200]]) + more)
    if s.get("file_errors"):
        out.append("<h3>Damage inside files</h3>" + table(["problem", "count"], [[k, v] for k, v in s["file_errors"].items()]))
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


def section_dedup(d: RunData, cfg: AuditConfig) -> str:
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
    if d.has("dup_cluster_size"):
        t = d.docs
        sizes = np.asarray(t.column("dup_cluster_size").fill_null(1).to_numpy(zero_copy_only=False), dtype=float)
        cid = t.column("dup_cluster_id").to_pylist() if "dup_cluster_id" in t.column_names else None
        in_cl = sizes >= 2
        n_clusters = len({c for c, z in zip(cid, sizes) if z >= 2 and c is not None}) if cid is not None else int(in_cl.sum())
        out.append(table(["", "value"], [["kept documents from a cluster of size >= 2", int(in_cl.sum())], ["clusters", n_clusters],
                                          ["largest cluster", int(sizes.max()) if len(sizes) else 0], ["mean cluster size (size >= 2)", float(sizes[in_cl].mean()) if in_cl.any() else 0.0]]))
    if mh or d.has("dup_cluster_size"):
        out.append(minhash_clusters(d, cfg))
    counters = [[f"{name}/{k}", v] for name, st in mh.items() for k, v in st.get("counters", {}).items()]
    if counters:
        out.append("<details><summary>MinHash counters (candidate pairs, edges, memory)</summary>" + table(["counter", "value"], counters) + "</details>")
    if not mh and not d.has("dup_cluster_size"):
        out.append(na("MinHash clusters", "enable the MinHash dedup step."))
    return "".join(out)


# -- what was dropped, by whom, from where; what was kept -----------------------------------
def _text_cell(text: str, limit: int) -> str:
    if not text:
        return "<div class='txt meta'>(no text)</div>"
    cut = text[:limit]
    more = f" … (+{len(text) - limit:,} characters)" if len(text) > limit else ""
    return f"<div class='txt'>{_e(cut)}{_e(more)}</div>"


def _no_dropped(d: RunData) -> str:
    mode = ((d.record.get("config") or {}).get("output") or {}).get("keep_dropped")
    if mode == "none":
        return na("dropped documents", "the run kept none (output.keep_dropped: none).")
    return na("dropped documents", "the run kept none: runs of ccpipe before keep_dropped, or nothing was dropped.")


def section_dropped(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='dropped'>Dropped documents</h2>"]
    drops = sorted(d.stats["dropped"].items(), key=lambda kv: -kv[1])
    if not drops:
        return out[0] + "<p>No document was dropped.</p>"
    t = d.dropped
    if t is None or not t.num_rows:
        return out[0] + _no_dropped(d)
    keys = [f"{s}/{r}" for s, r in zip(t.column("drop_step").to_pylist(), t.column("drop_reason").to_pylist())]
    kept_n = Counter(keys)
    nbytes = d.stats.get("counters", {}).get("dropped_bytes")
    out.append(f"<p>The run kept {t.num_rows:,} of its {d.stats['documents']['dropped']:,} dropped documents under "
               f"<code>dropped/</code>{f' ({nbytes / 1e6:.2f} MB)' if nbytes else ''}; below, for each reason, the first "
               f"{cfg.examples_per_reason} in shard order, with the value that caused the drop.</p>")
    read = d.stats["documents"]["read"]
    out.append(table(["step/reason", "documents dropped", "share of read", "kept under dropped/"],
                     [[k, v, _pct(v, read), kept_n.get(k, 0)] for k, v in drops]))
    cols = {c: t.column(c).to_pylist() for c in ("title", "url", "drop_detail", "file", "row")}
    for key, _ in drops:
        idx = [i for i, k in enumerate(keys) if k == key][: cfg.examples_per_reason]
        if not idx:
            continue
        txt = dropped_texts(d, [(cols["file"][i], cols["row"][i]) for i in idx])
        rows = "".join(f"<tr><td>{_e((cols['title'][i] or '')[:100])}<br><span class='meta'>{_e((cols['url'][i] or '')[:120])}</span></td>"
                       f"<td>{_e(cols['drop_detail'][i] or '')}</td><td>{_text_cell(x, cfg.text_chars)}</td></tr>"
                       for i, x in zip(idx, txt))
        out.append(f"<h3>{_e(key)}</h3><table class='ex'><thead><tr><th>title / URL</th><th>why</th><th>start of the text</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table>")
    return "".join(out)


def section_domains(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='domains'>Domains</h2>"]
    if "source_domain" not in d.docs.column_names and d.dropped_summary is None:
        return out[0] + na("per-domain view", "the rows have no source_domain column.")
    kept = Counter(d.docs.column("source_domain").to_pylist()) if "source_domain" in d.docs.column_names else Counter()
    dropped = Counter(d.dropped_summary.column("source_domain").to_pylist()) if d.dropped_summary is not None else Counter()
    total = kept + dropped
    nk = max(sum(kept.values()), 1)
    top = [k for k, _ in total.most_common(cfg.top_domains)]
    shares = sorted(kept.values(), reverse=True)
    out.append(f"<p>{len(kept):,} domains among kept documents, {len(dropped):,} among dropped ones"
               + ("" if d.dropped_summary is not None else " (dropped documents not kept by this run: kept only)") + ". "
               + "Share of kept documents from the largest domain: " + ", ".join(
                   f"top {n}: {sum(shares[:n]) / nk:.1%}" for n in (1, 10, 100) if len(shares) >= n) + ".</p>")
    if top:
        out.append(img(plots.stacked_hbar([str(k or "(none)")[:40] for k in top], [kept[k] for k in top], [dropped[k] for k in top],
                                          ("kept", "dropped"), f"documents per domain, largest {len(top)}"), "documents per domain"))
        out.append(table(["domain", "kept", "dropped", "dropped share", "share of kept"],
                         [[k or "(none)", kept[k], dropped[k], _pct(dropped[k], total[k]), _pct(kept[k], nk)] for k in top]))
    return "".join(out)


def section_lengths(d: RunData) -> str:
    out = ["<h2 id='lengths'>Lengths</h2>"]
    if "length" not in d.docs.column_names:
        return out[0] + na("lengths", "no kept documents.")
    s = d.dropped_summary
    empty = np.zeros(0)
    panels = [(f"characters per document", np.asarray(d.docs.column("length").to_numpy(zero_copy_only=False), float),
               np.asarray(s.column("length").to_numpy(zero_copy_only=False), float) if s is not None else empty),
              (f"lines per document", np.asarray(d.docs.column("nlines").to_numpy(zero_copy_only=False), float),
               np.asarray(s.column("nlines").to_numpy(zero_copy_only=False), float) if s is not None else empty)]
    out.append(img(plots.kept_vs_dropped(panels), "length and line count, kept and dropped"))
    out.append("<p class='meta'>Each distribution as a share of its own documents (log scale); a dropped document's "
               "length is as the dropping step saw it (after line dedup for later steps; empty documents are not drawn).</p>")
    if s is None:
        out.append(_no_dropped(d))
    rows = []
    for name, col in (("kept", d.docs), ("dropped", s)):
        if col is None or not col.num_rows:
            continue
        for c in ("length", "nlines"):
            v = np.asarray(col.column(c).to_numpy(zero_copy_only=False), float)
            q = np.quantile(v, [0.1, 0.5, 0.9])
            rows.append([name, "characters" if c == "length" else "lines", len(v), float(q[0]), float(q[1]), float(q[2])])
    out.append(table(["documents", "of", "n", "p10", "median", "p90"], rows))
    return "".join(out)


def section_samples(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='samples'>Kept samples</h2>"]
    t = d.docs
    if not t.num_rows:
        return out[0] + na("kept samples", "no kept documents.")
    parts = Counter(t.column("partition").to_pylist())
    order = [p for p, _ in parts.most_common(cfg.max_partitions_sampled)]
    out.append(f"<p>The first {cfg.samples_per_partition} documents (in shard order) of each language and bucket, "
               f"the {len(order)} largest of {len(parts)}.</p>")
    part, files, rows_ = (t.column(c).to_pylist() for c in ("partition", "file", "row"))
    title, url = (t.column(c).to_pylist() for c in ("title", "url"))
    first: dict[str, list[int]] = {}
    for i in sorted(range(len(part)), key=lambda i: (files[i], rows_[i])):
        if part[i] in order and len(first.setdefault(part[i], [])) < cfg.samples_per_partition:
            first[part[i]].append(i)
    idx = [i for p in order for i in first.get(p, [])]
    txt = kept_texts(d, [(files[i], rows_[i]) for i in idx])
    body = "".join(f"<tr><td>{_e(part[i])}<br><span class='meta'>{parts[part[i]]:,} documents</span></td>"
                   f"<td>{_e((title[i] or '')[:100])}<br><span class='meta'>{_e((url[i] or '')[:120])}</span></td>"
                   f"<td>{_text_cell(x, cfg.text_chars)}</td></tr>" for i, x in zip(idx, txt))
    out.append("<table class='ex samples'><thead><tr><th>language / bucket</th><th>title / URL</th><th>start of the text</th></tr></thead>"
               f"<tbody>{body}</tbody></table>")
    return "".join(out)


def section_run(d: RunData, cfg: AuditConfig) -> str:
    out = ["<h2 id='run'>Run</h2>"]
    info, rec, c = d.info, d.record, d.stats.get("counters", {})
    inv = info.get("invocations", [])
    if inv:
        out.append("<h3>Invocations</h3>" + table(["started (UTC)", "finished", "wall seconds", "ccpipe", "executor", "workers", "host"],
                   [[x.get("started", ""), x.get("finished", ""), float(x.get("wall_seconds", 0.0)), x.get("ccpipe_version", ""),
                     x.get("executor", ""), x.get("workers", ""), x.get("host", "")] for x in inv]))
    else:
        out.append(na("version and invocations", "the run has no stats/run_info.json (a ccpipe before it, or unfinished)."))
    phases = [[k.removeprefix("wall_seconds_"), float(v)] for k, v in c.items() if k.startswith("wall_seconds_")]
    if phases:
        out.append("<h3>Timings</h3>" + table(["phase (last invocation)", "wall seconds"], phases))
    shards = rec.get("shards") or []
    per_file = Counter(p for p, *_ in shards)
    sizes = {x["path"]: x.get("bytes") for x in info.get("inputs", [])}
    problems = d.stats.get("file_problems", {})
    cap = cfg.max_files_listed
    if per_file:
        listed = list(per_file.items())[:cap]
        out.append(f"<h3>Inputs</h3><p>{len(per_file):,} files, {len(shards):,} shards"
                   + (f"; the first {cap} listed" if len(per_file) > cap else "") + ".</p>"
                   + table(["file", "bytes", "shards", "problem"],
                           [[p, sizes.get(p) if sizes.get(p) is not None else "", n, problems.get(p, "")] for p, n in listed]))
    if rec.get("config"):
        config = json.loads(json.dumps(rec["config"]))
        paths = (config.get("input") or {}).get("paths")
        if isinstance(paths, list) and len(paths) > cap:
            config["input"]["paths"] = paths[:cap] + [f"... and {len(paths) - cap:,} more"]
        out.append("<h3>Config</h3><details><summary>the run's config (stats/run_config.json)</summary><pre>"
                   + _e(json.dumps(config, indent=2, sort_keys=True)) + "</pre></details>")
    return "".join(out)


def section_quality_score(d: RunData) -> str:
    out = "<h2 id='quality'>Quality score</h2>"
    if not d.has("quality_score"):
        return out + na("quality score", "enable the quality_score step (`ccpipe models build-defaults`).")
    kept = np.asarray(d.docs.column("quality_score").to_numpy(zero_copy_only=False), float)
    s = d.dropped_summary
    dropped = np.zeros(0)
    if s is not None:
        m = np.asarray([x == "quality_score" for x in s.column("drop_step").to_pylist()], bool)
        dropped = np.asarray(s.column("drop_value").to_numpy(zero_copy_only=False), float)[m] if m.any() else dropped
    below = ((d.record.get("config") or {}).get("quality_score") or {}).get("drop_below") or 0.0
    lines = [(float(below), f"drop_below {below}")] if below else []
    panels = [("kept documents", kept, lines)] + ([("dropped by quality_score", dropped, lines)] if dropped.size else [])
    fin = kept[np.isfinite(kept)]
    q = np.quantile(fin, [0.1, 0.5, 0.9]) if fin.size else [np.nan] * 3
    return out + img(plots.histograms(panels, "quality_score", cols=2), "quality score distribution") + table(
        ["documents", "p10", "median", "p90", "dropped by quality_score"], [[len(fin), float(q[0]), float(q[1]), float(q[2]), int(dropped.size)]])


def _context_start(lines: list[str], first: int, chars: int = 200) -> int:
    """Where to start showing ``lines`` so that at most 3 lines and ``chars`` characters
    come before line ``first`` (the difference stays in view of a scrolled cell)."""
    start, n = first, 0
    while start > 0 and first - start < 3 and n + len(lines[start - 1]) <= chars:
        start -= 1
        n += len(lines[start])
    return start


def _diff_cells(a: str, b: str, limit: int) -> tuple[str, str, str]:
    """Two texts as HTML, the lines that differ highlighted (difflib, line by line), each
    from just before the first difference (:func:`_context_start`) and cut at ``limit``
    characters; and a note saying how many lines differ."""
    al, bl = a.split("\n"), b.split("\n")
    ops = difflib.SequenceMatcher(None, al, bl, autojunk=False).get_opcodes()
    first = next((op for op in ops if op[0] != "equal"), None)
    if first is None:
        note = f"identical texts ({len(al):,} lines)"
        skip_a = skip_b = 0
    else:
        diff_a = sum(i2 - i1 for op, i1, i2, _, _ in ops if op != "equal")
        diff_b = sum(j2 - j1 for op, _, _, j1, j2 in ops if op != "equal")
        skip_a, skip_b = _context_start(al, first[1]), _context_start(bl, first[3])
        note = (f"{diff_a:,} of {len(al):,} lines differ on the left, {diff_b:,} of {len(bl):,} on the right"
                + (f"; shown from line {skip_a + 1:,} / {skip_b + 1:,}, just before the first difference" if skip_a or skip_b else ""))
    left, right = [], []
    for op, i1, i2, j1, j2 in ops:
        for side, lo, hi, lines, skip, cls in ((left, i1, i2, al, skip_a, "del"), (right, j1, j2, bl, skip_b, "ins")):
            for k in range(max(lo, skip), hi):
                side.append((lines[k], op == "equal", cls))

    def render(side: list) -> str:
        out, n = [], 0
        for text, same, cls in side:
            if n >= limit:
                out.append(_e("…"))
                break
            text = text[: limit - n]
            n += len(text) + 1
            out.append(_e(text) if same else f"<span class='{cls}'>{_e(text) or '&nbsp;'}</span>")
        return "<div class='txt'>" + "\n".join(out) + "</div>"

    return render(left), render(right), note


def minhash_clusters(d: RunData, cfg: AuditConfig) -> str:
    """Cluster-size histogram and a few clusters side by side (kept member and a removed one)."""
    out = []
    t = d.docs
    if d.has("dup_cluster_size"):
        sizes = np.asarray(t.column("dup_cluster_size").fill_null(1).to_numpy(zero_copy_only=False), int)
        per_size = Counter(sizes[sizes >= 2].tolist())  # one kept document per cluster
        if per_size:
            ks = sorted(per_size)
            labels = [str(k) for k in ks] if len(ks) <= 12 else [str(k) for k in ks[:11]] + [f">{ks[10]}"]
            vals = [per_size[k] for k in ks[:11]] + ([sum(per_size[k] for k in ks[11:])] if len(ks) > 12 else ([per_size[ks[11]]] if len(ks) == 12 else []))
            out.append(img(plots.bars(labels, vals, "near-duplicate clusters by size", "documents in the cluster", "clusters"), "MinHash cluster sizes"))
            n_cl, n_rm = sum(per_size.values()), sum((k - 1) * n for k, n in per_size.items())
            out.append(f"<p>{n_cl:,} cluster{'s' if n_cl != 1 else ''} of two or more documents; one member of each is kept, "
                       f"{n_rm:,} document{'s' if n_rm != 1 else ''} removed.</p>")
        else:
            out.append("<p>No near-duplicate cluster: every kept document is unique.</p>")
    r = d.dropped
    if r is None or not r.num_rows:
        return "".join(out)
    step = r.column("drop_step").to_pylist()
    mh = [i for i, s in enumerate(step) if s == "minhash"]
    if not mh:
        return "".join(out)
    kept_at = {}
    want = set(r.column("dup_kept_id").to_pylist())
    for i, (k, f, row) in enumerate(zip(t.column("id").to_pylist(), t.column("file").to_pylist(), t.column("row").to_pylist())):
        if k in want:
            kept_at[k] = (f, row)
    cid, kid, size = r.column("dup_cluster_id").to_pylist(), r.column("dup_kept_id").to_pylist(), r.column("drop_value").to_pylist()
    shown, picks = set(), []
    # largest clusters first, those whose kept member the run kept as MinHash saw it first, then shard order
    for i in sorted(mh, key=lambda i: (kid[i] not in d.cluster_kept, -(size[i] or 0))):
        if cid[i] not in shown and (kid[i] in kept_at or kid[i] in d.cluster_kept):
            shown.add(cid[i])
            picks.append(i)
        if len(picks) == cfg.clusters_shown:
            break
    if not picks:
        return "".join(out)
    as_seen = [kid[i] in d.cluster_kept for i in picks]
    seen_txt = iter(cluster_kept_texts(d, [d.cluster_kept[kid[i]] for i, s in zip(picks, as_seen) if s]))
    out_txt = iter(kept_texts(d, [kept_at[kid[i]] for i, s in zip(picks, as_seen) if not s]))
    kept_txt = [next(seen_txt) if s else next(out_txt) for s in as_seen]
    removed_txt = dropped_texts(d, [(r.column("file")[i].as_py(), r.column("row")[i].as_py()) for i in picks])
    urls, rurls = {k: u for k, u in zip(t.column("id").to_pylist(), t.column("url").to_pylist()) if k in want}, r.column("url").to_pylist()
    out.append(f"<h4>Clusters side by side</h4><p class='meta'>The kept member and a removed one as MinHash compared them, "
               f"{cfg.cluster_chars:,} characters from just before their first difference, lines that differ highlighted. Where the run did not keep the kept member's text "
               "from before line dedup (<code>dropped/cluster_kept/</code>), it is shown as in the output: after line dedup, "
               "without the lines it shares with other documents.</p>")
    for i, a, b, s in zip(picks, kept_txt, removed_txt, as_seen):
        la, lb, note = _diff_cells(a, b, cfg.cluster_chars)
        how = "as MinHash saw it" if s else "as in the output, after line dedup"
        out.append(f"<table class='ex side'><thead><tr><th>kept (cluster of {int(size[i] or 0)}), {how}: {_e((urls.get(kid[i]) or '')[:90])}</th>"
                   f"<th>removed: {_e((rurls[i] or '')[:90])}</th></tr></thead><tbody><tr><td>{la}</td><td>{lb}</td></tr>"
                   f"<tr><td colspan='2' class='meta'>{_e(note)}</td></tr></tbody></table>")
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
    sections = [section_summary(a), section_funnel(a), section_dropped(a, cfg), section_domains(a, cfg), section_lengths(a),
                section_languages(a), section_samples(a, cfg), section_perplexity(a, cfg), section_ref(a), section_quality_score(a),
                section_dedup(a, cfg), section_geometry(a, cfg), section_run(a, cfg)]
    nav = ["summary", "funnel", "dropped", "domains", "lengths", "languages", "samples", "perplexity", "ref", "quality", "dedup",
           "density", "clusters", "run"]
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
