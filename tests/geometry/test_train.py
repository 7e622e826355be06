"""Score-model training: checkpoints, exact resume, validation against an exact vMF score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geometry.analytic import VmfMixtureNoise
from geometry.score_model import ScoreModelConfig, ScoreNet
from geometry.train import TrainConfig, load_score_model, train_score_model, vmf_validation


def _sphere_data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    vmf = VmfMixtureNoise.random(d=d, k=3, kappa=20.0, sigma=0.1, seed=seed)
    return torch.from_numpy(vmf.sample_clean(n, np.random.default_rng(seed))).float()


def _cfg(**kw) -> TrainConfig:
    model = ScoreModelConfig(dim=8, hidden=32, blocks=1, n_sigmas=4, sigma_min=0.05, sigma_max=2.0, data_var=1 / 8)
    base = dict(epochs=3, batch_size=32, lr=1e-3, checkpoint_every=5, val_fraction=0.1, log_every=0, model=model, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class Killed(Exception):
    pass


def test_killed_mid_epoch_and_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    data = _sphere_data(300, 8)
    full = train_score_model(data, _cfg(), out_dir=tmp_path / "a")

    def kill(step: int) -> None:
        if step == 13:  # epoch 2, batch 4 of 9; last checkpoint at step 10
            raise Killed

    with pytest.raises(Killed):
        train_score_model(data, _cfg(), out_dir=tmp_path / "b", on_step=kill)
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert (ck["epoch"], ck["pos"], ck["step"]) == (1, 1, 10)
    resumed = train_score_model(data, _cfg(), out_dir=tmp_path / "b", resume=True)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=False)
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0)
    assert resumed.val_loss == full.val_loss
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_checkpoint_carries_config_ladder_and_metrics(tmp_path: Path) -> None:
    data = _sphere_data(200, 8, seed=1)
    res = train_score_model(data, _cfg(epochs=2), out_dir=tmp_path)
    ck = torch.load(tmp_path / "model.pt", weights_only=False)
    assert ck["model_config"]["dim"] == 8 and ck["train_config"]["epochs"] == 2
    assert len(ck["sigmas"]) == 4 and ck["sigmas"][0] == pytest.approx(2.0) and ck["sigmas"][-1] == pytest.approx(0.05)
    assert ck["val_loss"] == res.val_loss and np.isfinite(res.val_loss)
    for key in ("optimizer", "ema", "rng", "pos", "step"):
        assert key in ck
    h = ck["history"][-1]
    assert h["samples_per_s"] > 0 and h["data_s"] >= 0 and h["compute_s"] > 0 and len(h["val_loss_per_sigma"]) == 4
    net, meta = load_score_model(tmp_path / "model.pt", device="cpu")
    x = data[:5]
    torch.testing.assert_close(net(x, torch.tensor(0.05)), res.net(x, torch.tensor(0.05)))
    assert meta["val_loss"] == res.val_loss


def test_learned_score_matches_exact_vmf_score() -> None:
    d = 8
    vmf = VmfMixtureNoise.random(d=d, k=3, kappa=15.0, sigma=0.1, seed=3)
    data = torch.from_numpy(vmf.sample_clean(6000, np.random.default_rng(3))).float()
    model = ScoreModelConfig(dim=d, hidden=96, blocks=2, n_sigmas=4, sigma_min=0.1, sigma_max=2.0, data_var=1 / d)
    cfg = TrainConfig(epochs=12, batch_size=128, lr=2e-3, ema_decay=0.98, log_every=0, model=model, device="cpu", checkpoint_every=0)
    res = train_score_model(data, cfg)
    report = vmf_validation(res.net, vmf, n=1000, n_paths=16)
    errs = report["per_sigma"]
    # An untrained network (output 0) has relative error exactly 1; training must beat it clearly.
    untrained = vmf_validation(ScoreNet(model), vmf, n=200, n_paths=4)
    assert all(e == pytest.approx(1.0) for e in untrained["per_sigma"].values())
    # Measured: 0.003, 0.003, 0.013, 0.082 from sigma_max down; 0.10 along paths.
    assert max(errs.values()) < 0.15, errs
    assert errs[max(errs)] < 0.01, errs  # the largest sigma is nearly Gaussian: easy
    assert report["paths_sigma_min"] < 0.2, report


def test_one_noise_level_path_matches_per_row_path() -> None:
    """The metric calls the net with one scalar sigma (weights scaled, cond folded into
    the norm); training calls it with one sigma per row. Both must be the same function."""
    torch.manual_seed(0)
    net = ScoreNet(ScoreModelConfig(dim=16, hidden=32, blocks=2, data_var=1 / 16)).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(40, 16, dtype=torch.float64)
    for sigma in (0.02, 0.7):
        scalar = net(x, torch.tensor(sigma, dtype=torch.float64))
        per_row = net(x, torch.full((40,), sigma, dtype=torch.float64))
        assert torch.allclose(scalar, per_row, rtol=1e-10, atol=1e-10)
        assert scalar.abs().max() > 1e-3
