"""Atypicality measures: exact k-NN against brute force, and why k is a share of the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geometry.analytic import VmfMixtureNoise
from geometry.atypical import centroid_distance, knn_atypicality, knn_distance, run_atypicality
from geometry.store import EmbeddingStore


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _bulk_and_junk(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1,500 'documents' in 6 topical clusters and 20 (1.3%) junk ones in one tight cluster
    elsewhere, as a batch of near-identical spam pages sits in an embedding space."""
    d = 32
    bulk = VmfMixtureNoise.random(d=d, k=6, kappa=60.0, sigma=0.1, seed=seed).sample_clean(1500, np.random.default_rng(seed))
    junk = VmfMixtureNoise.random(d=d, k=1, kappa=400.0, sigma=0.1, seed=seed + 99).sample_clean(20, np.random.default_rng(seed + 1))
    x = np.concatenate([bulk, junk]).astype(np.float32)
    return x, np.r_[np.zeros(len(bulk), int), np.ones(len(junk), int)]


def test_knn_distance_equals_brute_force() -> None:
    x, _ = _bulk_and_junk()
    rng = np.random.default_rng(3)
    ref = np.sort(rng.choice(len(x), 400, replace=False))
    rows = np.r_[ref[:5], np.setdiff1d(np.arange(len(x)), ref)[:5]]  # in and out of the reference
    got = knn_distance(x, 7, rows=rows, reference=ref)
    v = x.astype(np.float64)
    for r, g in zip(rows, got):
        others = ref[ref != r]
        want = np.sort(1.0 - v[others] @ v[r])[:7].mean()
        assert g == pytest.approx(want, abs=1e-6)


def test_a_junk_cluster_is_atypical_at_the_scale_of_the_run_not_locally() -> None:
    x, junk = _bulk_and_junk()
    local = knn_distance(x, 10)
    default = knn_atypicality(x)  # k = 20% of the run: 304 > the 20 junk documents
    assert _auc(local[junk == 1], local[junk == 0]) < 0.5  # its own tight cluster hides it
    assert _auc(default[junk == 1], default[junk == 0]) > 0.95
    assert _auc(centroid_distance(x)[junk == 1], centroid_distance(x)[junk == 0]) > 0.9
    # a reference sample of the run gives nearly the same ranking whatever its seed (here
    # 1,200 of 1,520; with k = 20% reaching across these six well-separated clusters, an
    # 800 sample gives 0.90 and a 400 one 0.59; real corpora in bench_atypicality: >= 0.998)
    a = knn_atypicality(x, reference=1200, seed=0)
    b = knn_atypicality(x, reference=1200, seed=1)
    assert np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] > 0.95


def test_run_atypicality_aligns_ids_and_samples(tmp_path: Path) -> None:
    x, junk = _bulk_and_junk()
    store = EmbeddingStore.open(tmp_path, create=True, dim=x.shape[1])
    store.append([f"d{i}" for i in range(len(x))], x, shard="s")
    full = run_atypicality(tmp_path)
    assert list(full.ids[:3]) == ["d0", "d1", "d2"] and len(full.score) == len(x)
    assert {i for i, _ in full.top(20)} <= {f"d{i}" for i in np.flatnonzero(junk)}
    part = run_atypicality(tmp_path, sample=300)
    assert len(part.ids) == 300
    lookup = dict(zip(full.ids, full.score))
    assert all(lookup[i] == pytest.approx(s) for i, s in zip(part.ids, part.score))
    with pytest.raises(ValueError):
        run_atypicality(tmp_path, method="nope")
