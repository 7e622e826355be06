"""`ccpipe-geometry validate` on a run: held-out table, stretch figures, seed stability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geometry.analytic import VmfMixtureNoise
from geometry.cli import main
from geometry.store import EmbeddingStore, geometry_dir
from geometry.train import TrainConfig, default_model_config, train_score_model
from geometry.validate import validate_run


def _vmf_run(root: Path, n: int = 1500, d: int = 32) -> Path:
    """A run directory whose store holds n unit vectors from a vMF mixture, trained twice."""
    run = root / "run"
    vmf = VmfMixtureNoise.random(d=d, k=6, kappa=40.0, sigma=0.05, seed=0)
    x = vmf.sample_clean(n, np.random.default_rng(0)).astype(np.float32)
    store = EmbeddingStore.open(run, create=True, dim=d)
    store.append([f"doc{i}" for i in range(n)], x, shard="s")
    data = EmbeddingStore.open(run).tensor()
    for seed, out in ((0, geometry_dir(run) / "score"), (1, root / "seed1")):
        cfg = TrainConfig(epochs=6, batch_size=128, seed=seed, device="cpu", log_every=0, checkpoint_every=0,
                          model=default_model_config(data, seed=seed, hidden=64, blocks=1))
        train_score_model(data, cfg, out_dir=out)
    return run


@pytest.fixture(scope="module")
def vmf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _vmf_run(tmp_path_factory.mktemp("validate"))


def test_validate_run_reports_losses_stretch_and_seed_stability(vmf_run: Path) -> None:
    rep = validate_run(vmf_run, other=vmf_run.parent / "seed1" / "model.pt", n_pairs=300)
    table = rep["heldout_loss"]
    assert len(table) == 6 and all({"sigma", "model", "gaussian", "gamma", "diff_se"} <= set(r) for r in table)
    assert rep["heldout_loss_at_or_below_gaussian_every_rung"] == all(r["at_or_below_gaussian"] for r in table)
    for name in ("nearby_pairs", "random_pairs"):
        r = rep[name]
        # g = I + lam s s^T >= I: a Stein arc is never shorter than the arc (up to the
        # 32-point quadrature, ~1e-4 here).
        assert r["stretch_median"] >= 1.0 - 1e-3 and r["stretch_p90"] >= r["stretch_median"]
        assert -1.0 <= r["spearman_stretch_vs_gaussian_fit_stretch"] <= 1.0
    ss = rep["seed_stability"]
    assert 0.0 < ss["tangential_score_rel_disagreement"] < 2.0
    # The same model as "other": no disagreement at all, identical stretches.
    same = validate_run(vmf_run, other=geometry_dir(vmf_run) / "score" / "model.pt", n_pairs=300)["seed_stability"]
    assert same["tangential_score_rel_disagreement"] == 0.0
    assert same["nearby_stretch_spearman_between_seeds"] == pytest.approx(1.0)
    # c = 0 is cosine: every stretch is 1 up to the 32-point quadrature of the arc (O(N^-2)).
    flat = validate_run(vmf_run, c=0.0, n_pairs=100)
    assert flat["lam"] == 0.0 and flat["random_pairs"]["stretch_median"] == pytest.approx(1.0, abs=1e-3)
    assert rep["random_pairs"]["stretch_median"] > flat["random_pairs"]["stretch_median"]


def test_validate_cli_json(vmf_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["validate", str(vmf_run), "--pairs", "200", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["heldout_loss_at_or_below_gaussian_every_rung"] else 3)
    assert out["documents"] == 1500 and "metric_sigma" in out
    assert main(["validate"]) == 2  # neither a run nor --synthetic: a usage error, not a traceback
    assert main(["validate", str(vmf_run), "--synthetic", "vmf"]) == 2
