"""Which atypicality finds junk? Labelled junk among clean documents, two corpora.

    .venv/bin/python bench/bench_atypicality.py [--demo demo-out] [--junk 30] [--epochs 20] [--shares]

Corpora (each with ``--junk`` documents of each junk kind from bench/textcorpus.py added:
boilerplate lines of real WET pages, standard-library code, number tables, keyword spam):

* demo: the documents of a finished ``make demo`` run (embedded by ``ccpipe-geometry
  embed``; the junk is embedded with the run's own settings), skipped if absent;
* multilingual: XQuAD paragraphs in 12 languages + UD PUD sentences in 4;
* heldout (``--shares`` only): texts the default share was not chosen on: WikiText-2
  paragraphs, UD GSD sentences (fr, de, es; >= 8 words), XQuAD in its six non-Latin
  languages, and junk drawn with another seed.

``--shares`` sweeps the ``knn`` measure's share (k as a share of the reference sample) on
all three corpora instead of comparing the measures: ROC AUC, seed stability and the top 1%.

For each measure of geometry/atypical.py: ROC AUC of junk against the rest (and per junk
kind), Spearman between two score models trained with seeds 0 and 1 on the corpus (with
its junk, as a real run would), and what the top 1% holds (junk share, the most common
language among its clean documents and that language's share). Prints one JSON line per
corpus and measure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from textcorpus import Corpus, add_pud, add_xquad, embed, junk_texts  # noqa: E402

from geometry.atypical import METHODS, measure  # noqa: E402
from geometry.train import TrainConfig, default_model_config, train_score_model  # noqa: E402
from geometry.validate import roc_auc as auc  # noqa: E402
from geometry.validate import spearman  # noqa: E402


def demo_corpus(run: Path, n_junk: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    from ccpipe.io.dataset import read_rows
    from geometry.embed import EmbedConfig, Embedder
    from geometry.store import EmbeddingStore

    try:
        store = EmbeddingStore.open(run)
    except Exception as e:  # noqa: BLE001
        print("demo", json.dumps({"skipped": f"{run}: {e}"}))
        return None
    vecs = np.asarray(store.vectors())
    rows = read_rows(run, ["id", "language"]).to_pydict()
    lang_of = dict(zip(rows["id"], rows["language"]))
    lang = np.asarray([lang_of.get(str(i), "?") for i in store.ids()])
    junk = junk_texts(n_junk, seed=seed)
    emb = Embedder(EmbedConfig(progress=False, max_tokens=store.meta.get("max_tokens")))
    jv = emb.embed([t for _, t in junk])
    x = np.concatenate([vecs, jv]).astype(np.float32)
    is_junk = np.r_[np.zeros(len(vecs), int), np.ones(len(jv), int)]
    kind = np.r_[np.full(len(vecs), "clean", dtype=object), np.asarray([k for k, _ in junk], dtype=object)]
    return x, is_junk, kind, np.r_[lang, np.full(len(jv), "junk")]


def text_corpus(n_junk: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c = Corpus()
    add_xquad(c)
    add_pud(c)
    for k, t in junk_texts(n_junk, seed=seed):
        c.add(t, "junk", "junk", junk=1, kind=k)
    a = c.arrays()
    kind = np.where(a["junk"] == 1, a["kind"], "clean").astype(object)
    return embed(c), a["junk"], kind, a["lang"]


def heldout_corpus(n_junk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from textcorpus import DATA, add_wikitext

    c = Corpus()
    add_wikitext(c)
    for lang in ("fr", "de", "es"):
        for split in ("dev", "test"):
            for line in (DATA / "text" / "ud" / f"{lang}_gsd-ud-{split}.text.tsv").read_text(encoding="utf-8").splitlines()[1:]:
                sid, _, text = line.partition("\t")
                if len(text.split()) >= 8:
                    c.add(text.strip(), "gsd", lang, f"gsd:{sid}")
    add_xquad(c, ["ar", "el", "hi", "ru", "th", "zh"])
    for k, t in junk_texts(n_junk, seed=1):
        c.add(t, "junk", "junk", junk=1, kind=k)
    a = c.arrays()
    kind = np.where(a["junk"] == 1, a["kind"], "clean").astype(object)
    return embed(c), a["junk"], kind, a["lang"]


def top_share(s: np.ndarray, is_junk: np.ndarray, lang: np.ndarray) -> dict:
    """What the top 1% holds: its share of junk, the commonest language among its clean documents."""
    top = np.argsort(-s, kind="stable")[: max(1, len(s) // 100)]
    row: dict = {"top1pct_n": int(len(top)), "top1pct_junk_share": float(is_junk[top].mean())}
    clean_top = [str(v) for v in lang[top][is_junk[top] == 0]]
    common = Counter(clean_top).most_common(1)
    if common:
        row["top1pct_clean_top_language"] = common[0][0]
        row["top1pct_clean_top_language_share"] = common[0][1] / len(clean_top)
        row["corpus_share_of_that_language"] = float((lang[is_junk == 0] == common[0][0]).mean())
    return row


def sweep_shares(name: str, x: np.ndarray, is_junk: np.ndarray, kind: np.ndarray, lang: np.ndarray) -> None:
    from geometry.atypical import SHARE, knn_atypicality

    for share in (0.05, 0.1, 0.15, 0.2, 0.3):
        s, s1 = knn_atypicality(x, share=share, seed=0), knn_atypicality(x, share=share, seed=1)
        row = {"share": share, "default": share == SHARE, "auc_junk": auc(s[is_junk == 1], s[is_junk == 0])}
        for k in sorted(set(kind) - {"clean"}):
            row[f"auc_{k}"] = auc(s[kind == k], s[is_junk == 0])
        row["seed_spearman"] = spearman(s, s1)
        row.update(top_share(s, is_junk, lang))
        print(f"{name} knn share", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


def evaluate(name: str, x: np.ndarray, is_junk: np.ndarray, kind: np.ndarray, lang: np.ndarray, epochs: int) -> None:
    data = torch.from_numpy(x)
    nets = []
    for seed in (0, 1):
        t = time.perf_counter()
        cfg = TrainConfig(epochs=epochs, seed=seed, device="cpu", log_every=0, checkpoint_every=0, model=default_model_config(data, seed=seed))
        nets.append(train_score_model(data, cfg).net)
        print(f"{name} train seed {seed}", json.dumps({"documents": len(x), "junk": int(is_junk.sum()), "s": round(time.perf_counter() - t, 1),
                                                        "metric_sigma": float(nets[-1].metric_sigma)}))
    from geometry.atypical import knn_distance

    s10 = knn_distance(x, 10)
    print(f"{name} knn k=10 (local)", json.dumps({"auc_junk": round(auc(s10[is_junk == 1], s10[is_junk == 0]), 4),
                                                  **{f"auc_{k}": round(auc(s10[kind == k], s10[is_junk == 0]), 4) for k in sorted(set(kind) - {"clean"})}}))
    for method in METHODS:
        # seeds: the two score models for model-based measures, two reference samples for knn
        scores = ([measure(method, x, net=net, seed=0) for net in nets] if method in ("gaussian", "denoise", "score_norm")
                  else [measure(method, x, seed=s) for s in (0, 1)])
        s = scores[0]
        row = {"auc_junk": auc(s[is_junk == 1], s[is_junk == 0])}
        for k in sorted(set(kind) - {"clean"}):
            row[f"auc_{k}"] = auc(s[kind == k], s[is_junk == 0])
        row["seed_spearman"] = spearman(scores[0], scores[1]) if len(scores) > 1 else 1.0
        row.update(top_share(s, is_junk, lang))
        print(f"{name} {method}", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="demo-out")
    ap.add_argument("--junk", type=int, default=30, help="junk documents per kind")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--shares", action="store_true", help="sweep the knn share on three corpora instead")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    demo = demo_corpus(Path(args.demo), args.junk, seed=0)
    if args.shares:
        if demo is not None:
            sweep_shares("demo", *demo)
        sweep_shares("multilingual", *text_corpus(args.junk, seed=0))
        sweep_shares("heldout", *heldout_corpus(args.junk))
    else:
        if demo is not None:
            evaluate("demo", *demo, epochs=args.epochs)
        evaluate("multilingual", *text_corpus(args.junk, seed=0), epochs=args.epochs)
    print("total_s", round(time.perf_counter() - t0, 1), "load_avg_1m", os.getloadavg()[0])


if __name__ == "__main__":
    main()
