"""What does the Stein metric add over cosine? Neighbours and pairs on labelled real text.

    .venv/bin/python bench/bench_geometry_text.py [--queries 400] [--epochs 20] [--cs 0.3,1,3,10,100]

Corpus (bench/textcorpus.py): XQuAD paragraphs in 12 languages (translation groups),
WikiText-2 paragraphs (articles), UD PUD sentences in 4 languages (translation groups),
embedded with the project's embedder (cached in bench-out/). Two score models are trained
with the project's defaults and seeds 0 and 1. For every c, each query's 50 nearest by
cosine are re-ranked by the Stein length of the great-circle arc (the API's neighbour
mode), and the top 10 are scored against the labels:

* wikitext: same-article share of the 10; xquad / pud: translation found among the 10,
  same-language share of the 10;
* changed: share of queries whose top-10 set differs from cosine's; seed Jaccard: Jaccard
  of the (query, neighbour) pairs that Stein adds to cosine's top 10, seed 0 vs seed 1;
* pairs: ROC AUC of "same label" from the distance (lower = same) on nearby pairs (a query
  and one of its 10 nearest by cosine) and on random pairs, cosine alongside;
* Spearman of the stretch (Stein / arc) with the stretch of the Gaussian fit alone (the
  skip path) at the same c: how much of what the metric adds a Gaussian already says;
  the label and pair figures of that Gaussian-only metric (``gaussian_fit_*``) and of the
  seed-1 model (``seed1_*``) are printed alongside.

Everything is printed as one JSON object per section; float32 curves (as the service's
fast path). The c = 0 row is cosine itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from textcorpus import Corpus, add_pud, add_wikitext, add_xquad, embed  # noqa: E402

from geometry.distances import upper_bound  # noqa: E402
from geometry.metric import SteinMetric, scale_free_lambda  # noqa: E402
from geometry.score_model import ScoreFunction  # noqa: E402
from geometry.train import TrainConfig, default_model_config, train_score_model  # noqa: E402
from geometry.validate import gaussian_score_function, spearman  # noqa: E402
from geometry.validate import roc_auc as auc  # noqa: E402

K = 10
CAND = 50


def rerank(metric: SteinMetric | None, vecs: torch.Tensor, queries: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Top-K rows per query: cosine order (metric None) or Stein arc length over the candidates."""
    if metric is None:
        return cand[:, :K]
    q = vecs[torch.from_numpy(np.repeat(queries, cand.shape[1]))]
    y = vecs[torch.from_numpy(cand.reshape(-1))]
    d = np.empty(len(q))
    with torch.no_grad():
        for lo in range(0, len(q), 4096):
            d[lo : lo + 4096] = upper_bound(metric, q[lo : lo + 4096], y[lo : lo + 4096], n_points=32).distance.numpy()
    d = d.reshape(cand.shape)
    order = np.argsort(d, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(cand, order, axis=1)


def label_metrics(top: np.ndarray, queries: np.ndarray, lab: dict[str, np.ndarray]) -> dict:
    src, lang, group = lab["source"], lab["lang"], lab["group"]
    out = {}
    for s in ("wikitext", "xquad", "pud"):
        qi = np.flatnonzero(src[queries] == s)
        if not len(qi):
            continue
        q, t = queries[qi], top[qi]
        same_group = group[t] == group[q][:, None]
        if s == "wikitext":
            out["wikitext_same_article@10"] = float(same_group.mean())
        else:
            other_lang = lang[t] != lang[q][:, None]
            out[f"{s}_translation_found@10"] = float((same_group & other_lang).any(axis=1).mean())
            out[f"{s}_same_language@10"] = float((lang[t] == lang[q][:, None]).mean())
    return out


def pair_aucs(dist_fn, pairs: dict, lab: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, (a, b) in pairs.items():
        same = (lab["group"][a] == lab["group"][b]) & (lab["group"][a] != "")
        d = dist_fn(a, b)
        out[f"{name}_pairs_auc_same_label"] = auc(-d[same], -d[~same])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--cs", default="0.3,1,3,10")
    ap.add_argument("--pairs", type=int, default=3000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    c = Corpus()
    add_xquad(c)
    add_wikitext(c)
    add_pud(c)
    vec_np = embed(c)
    lab = c.arrays()
    print("corpus", json.dumps({"documents": len(c), "by_source": {s: int((lab["source"] == s).sum()) for s in ("xquad", "wikitext", "pud")},
                                "embed_s": round(time.perf_counter() - t0, 1)}))
    vecs32 = torch.from_numpy(vec_np).float()
    rng = np.random.default_rng(0)
    queries = np.concatenate([rng.choice(np.flatnonzero(lab["source"] == s), args.queries // 3, replace=False) for s in ("wikitext", "xquad", "pud")])
    sims = vec_np[queries] @ vec_np.T  # Q x N
    sims[np.arange(len(queries)), queries] = -np.inf
    cand = np.argsort(-sims, axis=1)[:, :CAND]  # Q x CAND, cosine order
    # Pairs: nearby (query, one of its 10 nearest) and random.
    na = rng.choice(len(c), args.pairs)
    nsims = vec_np[na] @ vec_np.T
    nsims[np.arange(len(na)), na] = -np.inf
    nb = np.argsort(-nsims, axis=1)[:, :K][np.arange(len(na)), rng.integers(0, K, len(na))]
    ra, rb = rng.choice(len(c), args.pairs), rng.choice(len(c), args.pairs)
    keep = ra != rb
    pairs = {"nearby": (na, nb), "random": (ra[keep], rb[keep])}

    nets = {}
    for seed in (0, 1):
        t = time.perf_counter()
        data = torch.from_numpy(vec_np)
        cfg = TrainConfig(epochs=args.epochs, seed=seed, device="cpu", log_every=0, checkpoint_every=0, model=default_model_config(data, seed=seed))
        res = train_score_model(data, cfg)
        nets[seed] = res.net
        v = res.validation
        print(f"score model seed {seed}", json.dumps({"train_s": round(time.perf_counter() - t, 1), "metric_sigma": v["metric_sigma"],
                                                      "confirmed": v["metric_sigma_confirmed"],
                                                      "heldout_model": [round(x, 5) for x in v["loss_model"]],
                                                      "heldout_gaussian": [round(x, 5) for x in v["loss_gaussian"]],
                                                      "gamma": [round(x, 3) for x in v["gamma"]]}))

    def arc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x, y = vecs32[torch.from_numpy(a)].double(), vecs32[torch.from_numpy(b)].double()
        return (2.0 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))).numpy()

    cos_top = rerank(None, vecs32, queries, cand)
    rows = {"cosine": {**label_metrics(cos_top, queries, lab), **pair_aucs(arc, pairs, lab)}}
    sample = vecs32[torch.from_numpy(rng.choice(len(c), 2048, replace=False))].double()
    for cval in [float(x) for x in args.cs.split(",")]:
        row: dict = {}
        added = {}
        for seed, net in nets.items():
            score = ScoreFunction(net)
            lam = scale_free_lambda(score, sample, c=cval, sphere=True)
            m = SteinMetric(score=score, lam=lam, sphere=True)
            top = rerank(m, vecs32, queries, cand)
            added[seed] = {(int(q), int(n)) for q, t, ct in zip(queries, top, cos_top) for n in set(t) - set(ct)}
            if seed == 1:
                row.update({f"seed1_{k}": v for k, v in label_metrics(top, queries, lab).items()})
            if seed == 0:
                row.update(label_metrics(top, queries, lab))
                row["changed_share"] = float(np.mean([set(t) != set(ct) for t, ct in zip(top, cos_top)]))
                row["lam"] = lam

                def stein(a: np.ndarray, b: np.ndarray, m: SteinMetric = m) -> np.ndarray:
                    with torch.no_grad():
                        return upper_bound(m, vecs32[torch.from_numpy(a)], vecs32[torch.from_numpy(b)], n_points=32).distance.double().numpy()

                row.update(pair_aucs(stein, pairs, lab))
                gs = gaussian_score_function(net)
                mg = SteinMetric(score=gs, lam=scale_free_lambda(gs, sample, c=cval, sphere=True), sphere=True)
                # The same metric with the Gaussian fit's score alone: what the network adds.
                row.update({f"gaussian_fit_{k}": v for k, v in label_metrics(rerank(mg, vecs32, queries, cand), queries, lab).items()})

                def stein_g(a: np.ndarray, b: np.ndarray, mg: SteinMetric = mg) -> np.ndarray:
                    with torch.no_grad():
                        return upper_bound(mg, vecs32[torch.from_numpy(a)], vecs32[torch.from_numpy(b)], n_points=32).distance.double().numpy()

                row.update({f"gaussian_fit_{k}": v for k, v in pair_aucs(stein_g, pairs, lab).items()})
                for name, (a, b) in pairs.items():
                    with torch.no_grad():
                        x, y = vecs32[torch.from_numpy(a)], vecs32[torch.from_numpy(b)]
                        ar = torch.from_numpy(arc(a, b)).float()
                        st = (upper_bound(m, x, y, n_points=32).distance / ar).numpy()
                        stg = (upper_bound(mg, x, y, n_points=32).distance / ar).numpy()
                    row[f"{name}_stretch_median"] = float(np.median(st))
                    row[f"{name}_spearman_stretch_vs_gaussian_fit"] = spearman(st, stg)
                    row[f"{name}_spearman_stein_vs_arc"] = spearman(st * ar.numpy(), ar.numpy())
        inter, union = len(added[0] & added[1]), len(added[0] | added[1])
        row["seed_jaccard_of_added_neighbours"] = inter / union if union else float("nan")
        rows[f"stein c={cval:g}"] = row
    for name, row in rows.items():
        print(name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    print("total_s", round(time.perf_counter() - t0, 1), "load_avg_1m", os.getloadavg()[0])


if __name__ == "__main__":
    main()
