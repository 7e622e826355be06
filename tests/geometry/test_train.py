"""Score-model training: checkpoints, exact resume, validation against an exact vMF score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geometry.analytic import VmfMixtureNoise
from geometry.score_model import ScoreFunction, ScoreModelConfig, ScoreNet, fit_gaussian
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
    # The calibration travels with the weights: gammas, the metric's sigma and the report.
    v = ck["validation"]
    assert v == res.validation and len(v["gamma"]) == 4 and len(v["loss_gaussian"]) == 4
    assert meta["metric_sigma"] == pytest.approx(v["metric_sigma"]) and v["metric_sigma"] in ck["sigmas"]
    torch.testing.assert_close(net.rung_gamma, torch.tensor(v["gamma"], dtype=net.rung_gamma.dtype))
    assert ScoreFunction(net).sigma == pytest.approx(v["metric_sigma"])


def test_learned_score_beats_the_gaussian_in_low_dimension() -> None:
    """d = 8: a quick check that training learns the mixture, against the exact vMF score
    (the 384-d check, where the old network failed, is the slow test below)."""
    d = 8
    vmf = VmfMixtureNoise.random(d=d, k=3, kappa=15.0, sigma=0.1, seed=3)
    data = torch.from_numpy(vmf.sample_clean(6000, np.random.default_rng(3))).float()
    model = ScoreModelConfig(dim=d, hidden=96, blocks=2, n_sigmas=4, sigma_min=0.1, sigma_max=2.0, data_var=1 / d)
    cfg = TrainConfig(epochs=12, batch_size=128, lr=2e-3, ema_decay=0.98, log_every=0, model=model, device="cpu", checkpoint_every=0)
    res = train_score_model(data, cfg)
    report = vmf_validation(res.net, vmf, n=1000, n_paths=16)
    # The skip path alone is the Gaussian fit; training must beat it at every rung where the
    # mixture shows (on S^7 a Gaussian misses the radial structure: 0.50 at sigma 0.1).
    for sigma, r in report["per_sigma"].items():
        assert r["noisy"] <= r["gaussian_noisy"] + 1e-3, (sigma, r)
    assert max(r["noisy"] for r in report["per_sigma"].values()) < 0.3, report
    # Where the metric reads it (measured 0.05 / 0.07; the Gaussian fit 0.24 / 0.41).
    assert report["tangential_rel_err_clean"] < 0.12 and report["tangential_rel_err_arcs"] < 0.15, report
    assert report["tangential_rel_err_clean"] < 0.5 * report["gaussian_tangential_rel_err_clean"], report


@pytest.mark.slow
def test_384d_vmf_tangential_score_at_the_metric_sigma() -> None:
    """The issue's targets in the embedding dimension: tangential relative error at the
    metric's sigma <= 0.2 at held-out clean points and <= 0.35 along arcs (the network
    without a skip path measured 1.13 / 1.22, worse than predicting zero). About 35 s of
    training on one core; measured 0.065 / 0.187 (Gaussian fit alone 0.35 / 0.48)."""
    from geometry.validate import validate_synthetic

    rep = validate_synthetic(n_eval=500, n_paths=16)
    assert rep["metric_sigma_confirmed"], rep["heldout_loss"]
    assert rep["tangential_rel_err_clean"] <= 0.2, rep
    assert rep["tangential_rel_err_arcs"] <= 0.35, rep
    assert rep["tangential_rel_err_clean"] < 0.5 * rep["gaussian_tangential_rel_err_clean"]
    assert all(r["at_or_below_gaussian"] for r in rep["heldout_loss"]), rep["heldout_loss"]


def test_skip_path_is_the_smoothed_gaussian_fit() -> None:
    """An untrained network (zero MLP output) is exactly the score of N(mu, Sigma + sigma^2 I)
    for the Ledoit-Wolf fit; with many samples that is the true Gaussian's."""
    g = torch.Generator().manual_seed(0)
    d = 6
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3
    cov = a @ a.T + 0.05 * torch.eye(d, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    x = mu + torch.randn(200_000, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    net = ScoreNet(ScoreModelConfig(dim=d, hidden=8, blocks=1, data_var=float(cov.diagonal().mean()))).double()
    net.set_gaussian(*fit_gaussian(x))
    q = torch.randn(50, d, generator=g, dtype=torch.float64)
    for sigma in (0.05, 0.5):
        want = -torch.linalg.solve(cov + sigma**2 * torch.eye(d, dtype=torch.float64), (q - mu).T).T
        got = net(q, torch.tensor(sigma, dtype=torch.float64))
        assert torch.allclose(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().mean()))
        torch.testing.assert_close(got, net.gaussian_score(q, torch.full((50,), sigma, dtype=torch.float64)))
    # Fewer points than dimensions: the shrinkage fit stays invertible and finite.
    mu2, ev2, _ = fit_gaussian(torch.randn(10, 40, generator=g))
    assert bool((ev2 > 0).all()) and bool(torch.isfinite(mu2).all())
    assert float(ev2.min()) > 1e-3 * float(ev2.max())


def test_calibration_shrinks_noise_to_the_gaussian_and_reports_it() -> None:
    """A network whose departure from the Gaussian is noise gets gamma ~ 0 on held-out data,
    no rung is confirmed, and the blended model is then the Gaussian baseline."""
    from geometry.train import calibrate

    d = 16
    data = _sphere_data(2000, d)
    model = ScoreModelConfig(dim=d, hidden=32, blocks=1, n_sigmas=3, sigma_min=0.05, sigma_max=0.5, data_var=1 / d)
    net = ScoreNet(model)
    net.set_gaussian(*fit_gaussian(data[:1000]))
    torch.manual_seed(1)
    torch.nn.init.normal_(net.out.weight, std=0.5)  # a departure that knows nothing
    rep = calibrate(net, data[1000:1500], data[1500:], model.sigmas(), seed=0)
    assert max(rep["gamma"]) < 0.05, rep["gamma"]
    assert not rep["metric_sigma_confirmed"]
    assert rep["metric_sigma"] == pytest.approx(0.05)
    for m, g, se in zip(rep["loss_model"], rep["loss_gaussian"], rep["loss_diff_se"]):
        assert m <= g + 2 * se + 1e-6
    assert all(r > g for r, g in zip(rep["loss_model_gamma1"], rep["loss_gaussian"]))  # unshrunk it was worse


def test_one_noise_level_path_matches_per_row_path() -> None:
    """The metric calls the net with one scalar sigma (weights scaled, cond folded into
    the norm); training calls it with one sigma per row. Both must be the same function."""
    torch.manual_seed(0)
    cfg = ScoreModelConfig(dim=16, hidden=32, blocks=2, data_var=1 / 16, n_sigmas=4, sigma_min=0.01, sigma_max=1.0)
    net = ScoreNet(cfg).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    net.set_gaussian(*fit_gaussian(torch.randn(500, 16, dtype=torch.float64) * 0.3 + 0.1))
    net.rung_gamma.copy_(torch.tensor([0.2, 1.0, 0.5, 0.9]))  # 0.02 and 0.7 fall between rungs
    x = torch.randn(40, 16, dtype=torch.float64)
    for sigma in (0.02, 0.7):
        scalar = net(x, torch.tensor(sigma, dtype=torch.float64))
        per_row = net(x, torch.full((40,), sigma, dtype=torch.float64))
        assert torch.allclose(scalar, per_row, rtol=1e-10, atol=1e-10)
        assert scalar.abs().max() > 1e-3
