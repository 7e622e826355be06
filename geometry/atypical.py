"""How atypical is each document of a run: measures on the embeddings, one validated default.

The score norm |s(x)| is *not* one of them: for an exact score it grows with density
(Spearman +0.88 with log p on a vMF mixture), and on real runs its "most atypical" were
well-formed sections in scripts the English embedder lumps together, not junk.

* ``knn`` (default): mean cosine distance to the k nearest documents of a seeded reference
  sample of the run (at most ``reference`` = 5,000 documents), with k = ``share`` (20%) of
  the sample: a document is atypical when it is far from the bulk at the scale of a fifth
  of the run, so a kind of document that makes up a few percent of a run (a batch of spam
  pages, number tables) is flagged even though its members sit close to each other. With
  k = 10 (local density) junk of one kind hides in its own tight cluster: measured ROC AUC
  0.43 (demo) and 0.38 (multilingual). ``bench/bench_atypicality.py --shares`` sweeps the
  share on three corpora; 20% is the smallest share that reaches 0.85 on the multilingual
  one (5%: 0.82) and it scores 0.92 on a third corpus the choice was not made on.
* ``centroid``: cosine distance to the run's mean direction (the k = N end of the above).
* ``gaussian``: Mahalanobis distance under the score model's Gaussian fit (shrinkage
  covariance), i.e. the negative log-likelihood of the affine-Gaussian model.
* ``denoise``: the score model's denoising loss at the metric's sigma, averaged over a few
  seeded noise draws: how badly the model of the data explains this point.
* ``score_norm``: |tangential s(x)|, kept only so benchmarks can show what it does.

``bench/bench_atypicality.py`` measures them on labelled junk (boilerplate, code, number
tables, keyword spam) among clean documents, on the demo run and on a multilingual corpus;
:data:`DEFAULT_METHOD` is the one it supports (docs/geometry.md has the figures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from geometry.errors import StoreError

Method = Literal["knn", "centroid", "gaussian", "denoise", "score_norm"]
METHODS: tuple[str, ...] = ("knn", "centroid", "gaussian", "denoise", "score_norm")
SHARE = 0.2
"""Default k of ``knn`` as a share of the reference sample."""
REFERENCE = 5000
"""Default size of the reference sample of ``knn``."""
DEFAULT_METHOD: Method = "knn"


@dataclass(slots=True, frozen=True, kw_only=True)
class Atypicality:
    """One score per document (higher = more atypical), aligned with ``ids``."""

    ids: np.ndarray
    """N document ids (object array)."""
    score: np.ndarray
    """N float64."""
    method: str
    detail: str
    """What the score is, in words, for reports."""

    def top(self, n: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.score, kind="stable")[:n]
        return [(str(self.ids[i]), float(self.score[i])) for i in order]


def knn_distance(vecs: np.ndarray, k: int = 10, *, rows: np.ndarray | None = None, reference: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine distance (1 - cos) of each of ``rows`` (default: all) to its k nearest
    rows among ``reference`` (default: all rows), the row itself excluded; unit vectors,
    exact search (faiss flat inner product)."""
    import faiss

    base = np.ascontiguousarray(vecs, dtype=np.float32)
    rows = np.arange(base.shape[0]) if rows is None else np.asarray(rows)
    ref = np.arange(base.shape[0]) if reference is None else np.asarray(reference)
    k = max(1, min(k, len(ref) - 1))
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base[ref]))
    out = np.empty(len(rows))
    for lo in range(0, len(rows), 4096):
        r = rows[lo : lo + 4096]
        sims, found = index.search(np.ascontiguousarray(base[r]), k + 1)  # B x (k+1)
        own = ref[found.clip(0)] == r[:, None]
        own[~own.any(axis=1), -1] = True  # not in the reference (or outranked by a duplicate): drop the last
        out[lo : lo + len(r)] = (1.0 - sims[~own].reshape(len(r), k).astype(np.float64)).mean(axis=1)
    return out


def knn_atypicality(vecs: np.ndarray, *, share: float = SHARE, reference: int = REFERENCE, rows: np.ndarray | None = None,
                    seed: int = 0) -> np.ndarray:
    """The ``knn`` measure: k = max(10, share x sample) nearest among a seeded sample of at
    most ``reference`` rows."""
    n = vecs.shape[0]
    ref = np.arange(n) if n <= reference else np.sort(np.random.default_rng(seed).choice(n, size=reference, replace=False))
    k = max(10, int(round(share * len(ref))))
    return knn_distance(vecs, k, rows=rows, reference=ref)


def centroid_distance(vecs: np.ndarray) -> np.ndarray:
    """1 - cos to the mean direction of all rows."""
    x = np.asarray(vecs, dtype=np.float64)
    m = x.mean(axis=0)
    return 1.0 - x @ (m / max(np.linalg.norm(m), 1e-12))


def gaussian_nll(net, vecs: np.ndarray, *, batch: int = 8192) -> np.ndarray:
    """Squared Mahalanobis distance to the network's Gaussian fit (= 2 NLL up to a constant)."""
    u, ev, mu = net.g_evecs.double(), net.g_evals.double(), net.g_mean.double()
    out = np.empty(len(vecs))
    for lo in range(0, len(vecs), batch):
        x = torch.from_numpy(np.ascontiguousarray(vecs[lo : lo + batch])).double()  # B x d
        y = (x - mu) @ u  # B x d
        out[lo : lo + len(x)] = (y * y / ev).sum(-1).numpy()
    return out


def denoising_loss(net, vecs: np.ndarray, *, sigma: float | None = None, draws: int = 8, seed: int = 0, batch: int = 4096) -> np.ndarray:
    """Mean DSM loss |sigma s(x + sigma z) + z|^2 / d per point over ``draws`` seeded noises."""
    sg = float(net.metric_sigma if sigma is None else sigma)
    g = torch.Generator().manual_seed(seed)
    p = next(net.parameters())
    out = np.zeros(len(vecs))
    with torch.no_grad():
        for lo in range(0, len(vecs), batch):
            x = torch.from_numpy(np.ascontiguousarray(vecs[lo : lo + batch])).to(p)  # B x d
            acc = torch.zeros(x.shape[0], dtype=torch.float64)
            for _ in range(draws):
                z = torch.randn(x.shape, generator=g).to(x)
                s = net(x + sg * z, torch.tensor(sg, dtype=x.dtype))
                acc += (sg * s + z).pow(2).mean(-1).double().cpu()
            out[lo : lo + len(x)] = (acc / draws).numpy()
    return out


def score_norm(net, vecs: np.ndarray, *, batch: int = 4096) -> np.ndarray:
    """|tangential s(x)| at the metric's sigma (for comparison only; see the module docstring)."""
    from geometry.score_model import ScoreFunction

    score = ScoreFunction(net)
    out = np.empty(len(vecs))
    with torch.no_grad():
        for lo in range(0, len(vecs), batch):
            x = torch.from_numpy(np.ascontiguousarray(vecs[lo : lo + batch])).double()
            s = score(x)
            s = s - (s * x).sum(-1, keepdim=True) * x
            out[lo : lo + len(x)] = s.norm(dim=-1).numpy()
    return out


def measure(method: str, vecs: np.ndarray, *, net=None, share: float = SHARE, seed: int = 0) -> np.ndarray:
    """Atypicality of every row of ``vecs`` (N x d unit vectors) by ``method``."""
    if method == "knn":
        return knn_atypicality(vecs, share=share, seed=seed)
    if method == "centroid":
        return centroid_distance(vecs)
    if net is None:
        raise StoreError(f"atypicality method {method!r} needs a trained score model")
    if method == "gaussian":
        return gaussian_nll(net, vecs)
    if method == "denoise":
        return denoising_loss(net, vecs, seed=seed)
    if method == "score_norm":
        return score_norm(net, vecs)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


_DETAIL = {
    "knn": "mean cosine distance to the nearest {share:.0%} of a reference sample of the run's documents",
    "centroid": "cosine distance to the mean direction of the run's documents",
    "gaussian": "squared Mahalanobis distance to the Gaussian fit of the embeddings",
    "denoise": "denoising loss of the score model at its metric sigma (8 noise draws)",
    "score_norm": "norm of the tangential score (grows with density: not an atypicality)",
}


def run_atypicality(run_dir: str | os.PathLike[str], *, method: str = DEFAULT_METHOD, share: float = SHARE,
                    sample: int | None = None, seed: int = 0) -> Atypicality:
    """Atypicality of a run's embedded documents (``sample``: a seeded subset of that many)."""
    from geometry.store import EmbeddingStore, geometry_dir

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1), got {share}")
    run = Path(run_dir)
    store = EmbeddingStore.open(run)
    if store.count < 2:
        raise StoreError(f"{run}: {store.count} embeddings; atypicality needs at least 2")
    vecs = np.asarray(store.vectors())
    ids = store.ids()
    net = None
    if method in ("gaussian", "denoise", "score_norm"):
        from geometry.train import load_score_model

        net, _ = load_score_model(geometry_dir(run) / "score" / "model.pt", device="cpu")
    if sample is not None and store.count > sample:
        rows = np.sort(np.random.default_rng(seed).choice(store.count, size=sample, replace=False))
    else:
        rows = np.arange(store.count)
    if method == "knn":
        score = knn_atypicality(vecs, share=share, rows=rows, seed=seed)
    elif method == "centroid":
        score = centroid_distance(vecs)[rows]
    else:
        score = measure(method, vecs[rows], net=net, seed=seed)
    return Atypicality(ids=np.asarray(ids[rows], dtype=object), score=score, method=method, detail=_DETAIL[method].format(share=share))
