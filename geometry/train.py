"""Denoising score matching over a noise ladder, with checkpoints that resume exactly.

Loss per sample (x clean, sigma from the ladder, z ~ N(0, I)):
    |sigma s_theta(x + sigma z, sigma) + z|^2 / d
which is Song & Ermon's lambda(sigma) = sigma^2 weighting, normalised so an untrained
network (output 0) scores 1.0 at every level.

Exact resume: the epoch's batch order is a pure function of (seed, epoch); the noise comes
from a dedicated generator whose state is in the checkpoint, with the model, optimiser, EMA,
the global RNG states, the epoch and the position in it. A run killed mid-epoch and resumed
from its last checkpoint therefore ends with bit-identical weights on the same device.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from geometry.errors import StoreError
from geometry.score_model import ScoreFunction, ScoreModelConfig, ScoreNet, fit_gaussian

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
"""2: Gaussian skip path, baseline losses and the metric's sigma (1 had no skip path)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class TrainConfig:
    """Score-model training; stored inside every checkpoint."""

    epochs: int = 20
    """Passes over the training split."""
    batch_size: int = 256
    """Samples per step (each with its own noise level)."""
    lr: float = 1e-3
    """Adam learning rate."""
    ema_decay: float = 0.999
    """EMA of weights (ramped in as min(decay, (1 + step) / (10 + step))); the EMA network is
    what checkpoints serve."""
    val_fraction: float = 0.1
    """Held-out share of the data: half of it fits the per-rung gammas and picks the metric's
    sigma, the other half reports the held-out losses (see :func:`calibrate`)."""
    val_max: int = 4096
    """Held-out points evaluated at most (at every noise level)."""
    seed: int = 0
    """Seeds the split, init, batch order and noise."""
    device: str | None = None
    """"cuda" or "cpu"; None picks CUDA when available."""
    checkpoint_every: int = 200
    """Steps between resumable checkpoints (also written at every epoch end); 0 = epoch ends only."""
    log_every: int = 50
    """Steps between throughput log lines."""
    cpu_threads: int | None = 1
    """torch threads while training on CPU (restored afterwards); None leaves torch's setting.
    The network's matmuls are small (batch 256 x width 256): on the 2-core machine, 4 epochs
    on the 4,909 demo embeddings took 2.7 / 3.6 s with one thread and 17.1 / 7.3 s with two
    (alternated runs, machine load ~2.4), the second thread spinning in OpenMP."""
    gaussian_fit_max: int = 20_000
    """Training rows the skip path's Gaussian (mean, shrinkage covariance) is fitted on at most."""
    model: ScoreModelConfig | None = None
    """Architecture and ladder; None derives sigma_max and data_var from the data."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size >= 1 and lr > 0 required")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.ema_decay < 1:
            raise ValueError("val_fraction and ema_decay must lie in [0, 1)")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1 (or None)")


@dataclass(slots=True, kw_only=True)
class TrainResult:
    """What a training run produced."""

    net: ScoreNet
    """EMA network, in eval mode."""
    val_loss: float
    """Final held-out loss (mean over the ladder, on the report half after calibration),
    NaN without a validation split."""
    history: list[dict] = field(default_factory=list)
    """One dict per epoch: losses, timings, throughput, GPU memory."""
    checkpoint: Path | None = None
    validation: dict | None = None
    """:func:`calibrate`'s report: per rung gamma, held-out loss of model and Gaussian
    baseline, the metric's sigma and the rule that chose it (None without a held-out split)."""


def default_model_config(data: Tensor, *, seed: int = 0, sample: int = 2048, **overrides) -> ScoreModelConfig:
    """data_var measured; sigma_max = 3 diameter / sqrt(d) (diameter: the largest pairwise
    distance in a sample), where the noise's norm is three times the data's diameter.

    Song & Ermon put sigma_max at the diameter so that sampling can start from noise; this
    model is never sampled, only read by the metric at a validated rung, and above this
    level the smoothed density is a Gaussian blob: on a 384-d vMF mixture the network's
    departure from the Gaussian was never confirmed on held-out data above sigma 0.3, and
    dropping those rungs (10 rungs up to 1.6 -> 6 up to 0.29) took the tangential error at
    the metric's sigma from 0.21 / 0.37 (clean / arcs) to 0.07 / 0.19 for the same training."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.shape[0], generator=g)[: min(sample, data.shape[0])].sort().values
    x = torch.as_tensor(np.asarray(data[idx.numpy()] if isinstance(data, np.ndarray) else data[idx]), dtype=torch.float32)
    diam = float(torch.cdist(x, x).max()) if x.shape[0] > 1 else 1.0
    var = float(x.var(dim=0).mean()) if x.shape[0] > 1 else 1.0 / x.shape[1]
    smin = float(overrides.get("sigma_min", ScoreModelConfig().sigma_min))
    kw = {"dim": int(x.shape[1]), "sigma_max": max(3.0 * diam / math.sqrt(x.shape[1]), 2 * smin), "data_var": max(var, 1e-8)}
    kw.update(overrides)
    return ScoreModelConfig(**kw)


def _dsm_loss(net: ScoreNet, x: Tensor, sigma: Tensor, z: Tensor) -> Tensor:
    s = net(x + sigma[:, None] * z, sigma)  # B x d
    return (sigma[:, None] * s + z).pow(2).mean(dim=-1)  # B


@torch.no_grad()
def rung_sample_losses(net: ScoreNet, x: Tensor, sigmas: Tensor, *, seed: int, gaussian_only: bool = False) -> list[Tensor]:
    """Per rung, the DSM loss of every point of x (V) with fixed noise (seeded): the same
    noise for every network given the same seed, so two networks' losses pair exactly.
    ``gaussian_only`` scores the skip path alone: the affine-Gaussian baseline."""
    g = torch.Generator().manual_seed(seed)
    per = []
    for s in sigmas.tolist():
        z = torch.randn(x.shape, generator=g).to(x)  # V x d
        sig = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)  # V
        if gaussian_only:
            loss = (sig[:, None] * net.gaussian_score(x + sig[:, None] * z, sig) + z).pow(2).mean(-1)  # V
        else:
            loss = _dsm_loss(net, x, sig, z)  # V
        per.append(loss.double().cpu())
    return per


def rung_losses(net: ScoreNet, x: Tensor, sigmas: Tensor, *, seed: int, gaussian_only: bool = False) -> list[float]:
    """Mean DSM loss of the points x at every rung (see :func:`rung_sample_losses`)."""
    return [float(v.mean()) for v in rung_sample_losses(net, x, sigmas, seed=seed, gaussian_only=gaussian_only)]


@torch.no_grad()
def fit_rung_gamma(net: ScoreNet, x: Tensor, sigmas: Tensor, *, seed: int) -> list[float]:
    """Per rung, the held-out-optimal weight gamma in [0, 1] of the network's departure
    from its Gaussian skip path.

    With delta = s_theta - s_G (at gamma = 1) the loss |sigma (s_G + gamma delta) + z|^2 is
    quadratic in gamma; its minimiser is gamma* = <s - s_G, delta> / |delta|^2 in
    expectation (E[z | x~] = -sigma s): 1 when all of the departure is real, 1/2 at break-even
    with the Gaussian, 0 or below when it is noise. Clipped to [0, 1], so the blended model
    is never worse than the Gaussian on the data it was fitted on.
    """
    saved = net.rung_gamma.clone()
    net.rung_gamma.fill_(1.0)
    g = torch.Generator().manual_seed(seed)
    out = []
    try:
        for s in sigmas.tolist():
            z = torch.randn(x.shape, generator=g).to(x)  # V x d
            sig = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)  # V
            xt = x + sig[:, None] * z  # V x d
            base = s * net.gaussian_score(xt, sig) + z  # V x d: the Gaussian's residual
            dev = s * net(xt, sig) + z - base  # V x d: sigma * delta
            den = float(dev.pow(2).sum())
            out.append(min(1.0, max(0.0, -float((dev * base).sum()) / den)) if den > 0 else 0.0)
    finally:
        net.rung_gamma.copy_(saved)
    return out


@torch.no_grad()
def _tangential_gain(net: ScoreNet, x: Tensor, sigma: float, *, seed: int) -> tuple[float, float]:
    """Mean and standard error of (Gaussian's - model's) tangential denoising loss at the
    held-out points x: the loss restricted to the tangent plane of the sphere through each
    noisy point, i.e. the part of the score a metric on the sphere reads."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(x.shape, generator=g).to(x)  # V x d
    sig = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)  # V
    xt = x + sigma * z  # V x d
    u = xt / xt.norm(dim=-1, keepdim=True)  # V x d

    def tan_loss(s: Tensor) -> Tensor:
        r = sigma * s + z  # V x d
        r = r - (r * u).sum(-1, keepdim=True) * u
        return r.pow(2).mean(-1)  # V

    diff = (tan_loss(net.gaussian_score(xt, sig)) - tan_loss(net(xt, sig))).double()  # V
    se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else math.inf
    return float(diff.mean()), se


@torch.no_grad()
def calibrate(
    net: ScoreNet, select_x: Tensor, report_x: Tensor, sigmas: Tensor, *, seed: int, gamma_min: float = 0.9, z_min: float = 3.0
) -> dict:
    """Fit the per-rung gammas and choose the metric's noise level on held-out data; report
    the losses on a second held-out half that took no part in either choice.

    A rung is confirmed when the network's departure from the Gaussian holds up on held-out
    data: gamma* >= ``gamma_min`` and a tangential denoising gain over the Gaussian (the part
    of the loss a metric on the sphere reads) at least ``z_min`` standard errors above zero.
    The metric reads the score at the confirmed rung where that gain is most certain (largest
    gain / s.e.; among rungs within 10% of it, the smallest sigma). Large sigma smooths the
    density into a Gaussian; small sigma leaves too little signal per sample to learn from a
    finite corpus; the gain's z-score is small at both ends. On a 384-d vMF mixture (32
    clusters, 20,000 points, 8 epochs) it peaked at sigma 0.054-0.095, where the exact
    tangential error was also lowest (0.21-0.24, against 0.25 at sigma 0.01 and 0.39 at 0.17).
    When no rung passes, the metric reads the smallest rung and the report says that the
    score there is (nearly) the Gaussian fit's.
    """
    gammas = fit_rung_gamma(net, select_x, sigmas, seed=seed)
    net.rung_gamma.copy_(torch.tensor(gammas, dtype=net.rung_gamma.dtype))
    gains = [_tangential_gain(net, select_x, s, seed=seed + 1) for s in sigmas.tolist()]
    ladder = sigmas.tolist()
    passed = [i for i, (g, (m, se)) in enumerate(zip(gammas, gains)) if g >= gamma_min and m >= z_min * se and m > 0]
    if passed:
        zs = {i: gains[i][0] / max(gains[i][1], 1e-300) for i in passed}
        top = max(zs.values())
        pick = min((i for i in passed if zs[i] >= 0.9 * top), key=lambda i: ladder[i])
    else:
        pick = int(np.argmin(ladder))
    net.metric_sigma.fill_(ladder[pick])
    raw = net.rung_gamma.clone()
    net.rung_gamma.fill_(1.0)
    loss_raw = rung_losses(net, report_x, sigmas, seed=seed + 2)
    net.rung_gamma.copy_(raw)
    per_m = rung_sample_losses(net, report_x, sigmas, seed=seed + 2)
    per_g = rung_sample_losses(net, report_x, sigmas, seed=seed + 2, gaussian_only=True)
    loss, loss_g = [float(v.mean()) for v in per_m], [float(v.mean()) for v in per_g]
    n_rep = report_x.shape[0]
    diff_se = [float((m - g).std() / math.sqrt(n_rep)) if n_rep > 1 else math.inf for m, g in zip(per_m, per_g)]
    return {
        "sigmas": ladder,
        "gamma": gammas,
        "tangential_gain": [m for m, _ in gains],
        "tangential_gain_se": [se for _, se in gains],
        "loss_model": loss,
        "loss_model_gamma1": loss_raw,
        "loss_gaussian": loss_g,
        "loss_diff_se": diff_se,
        "metric_sigma": ladder[pick],
        "metric_sigma_confirmed": bool(passed),
        "rule": f"confirmed (gamma >= {gamma_min}, tangential gain >= {z_min} s.e.) rung with the largest gain z-score (smallest sigma within 10% of it)",
        "n_select": int(select_x.shape[0]),
        "n_report": int(report_x.shape[0]),
    }


def validation_loss(net: ScoreNet, x: Tensor, sigmas: Tensor, *, seed: int) -> tuple[float, list[float]]:
    """Mean DSM loss of held-out points at every rung, with fixed noise (seeded)."""
    per = rung_losses(net, x, sigmas, seed=seed)
    return float(np.mean(per)), per


def _gpu_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    st = torch.cuda.memory_stats(device)
    return {
        "peak_active_bytes": int(st.get("active_bytes.all.peak", 0)),
        "peak_reserved_bytes": int(st.get("reserved_bytes.all.peak", 0)),
        "alloc_retries": int(st.get("num_alloc_retries", 0)),
        "ooms": int(st.get("num_ooms", 0)),
    }


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_score_model(
    data: Tensor,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on ``data`` (N x d, e.g. the store's memory-mapped tensor; rows are gathered per batch).

    With ``out_dir``, ``last.pt`` (resumable) is written every ``checkpoint_every`` steps and at
    epoch ends, and ``model.pt`` at the end. ``resume`` continues from ``last.pt``.
    ``on_step(global_step)`` runs after every optimiser step (progress hooks, tests).
    """
    cfg = config or TrainConfig()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and cfg.cpu_threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(cfg.cpu_threads)
        try:
            return _train(data, cfg, device, out_dir, resume, on_step)
        finally:
            torch.set_num_threads(before)
    return _train(data, cfg, device, out_dir, resume, on_step)


def _train(data, cfg: TrainConfig, device: torch.device, out_dir, resume: bool, on_step) -> TrainResult:
    n = int(data.shape[0])
    if n < 2:
        raise StoreError("need at least 2 embeddings to train a score model")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    split = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(int(n * cfg.val_fraction), cfg.val_max) if n >= 20 else 0
    val_rows, train_rows = split[:n_val].sort().values, split[n_val:]
    mcfg = cfg.model or default_model_config(data, seed=cfg.seed)
    cfg = replace(cfg, model=mcfg)
    sigmas = mcfg.sigmas().to(device)  # L

    def gather(rows: Tensor) -> Tensor:
        # Sorted rows read the memory map front to back; order inside a batch does not
        # change the mean loss.
        r = rows.sort().values
        x = data[r.numpy()] if isinstance(data, np.ndarray) else data[r]
        return torch.as_tensor(x, dtype=torch.float32).to(device, non_blocking=True)  # B x d

    torch.manual_seed(cfg.seed)
    net = ScoreNet(mcfg).to(device)
    if mcfg.skip == "gaussian":
        # The skip path's Gaussian is fitted on (a sample of) the training split only, so the
        # held-out baseline is honest. train_rows is already a seeded random order.
        fit_x = gather(train_rows[: cfg.gaussian_fit_max])  # F x d
        net.set_gaussian(*fit_gaussian(fit_x))
        net.init_from_data(fit_x, generator=torch.Generator().manual_seed(cfg.seed + 3))
        del fit_x
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    epoch, pos, step = 0, 0, 0
    history: list[dict] = []
    acc = {"seen": 0, "loss_sum": 0.0}  # running sums of the epoch in progress

    last = out / "last.pt" if out is not None else None
    if resume and last is not None and last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        if ck["model_config"] != mcfg.to_dict():
            raise StoreError(f"{last} was trained with another model config; delete it or drop --resume")
        net.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        noise_gen.set_state(ck["rng"]["noise"].cpu())
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        epoch, pos, step, history, acc = ck["epoch"], ck["pos"], ck["step"], ck["history"], ck["epoch_acc"]
        log.info("resumed from %s at epoch %d, batch %d (step %d)", last, epoch, pos, step)

    def state(final: bool, val: float) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": mcfg.to_dict(),
            "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"},
            "sigmas": sigmas.cpu().tolist(),
            "model": net.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": {"noise": noise_gen.get_state(), "torch": torch.get_rng_state()},
            "epoch": epoch,
            "pos": pos,
            "step": step,
            "history": history,
            "epoch_acc": dict(acc),
            "val_loss": val,
            "n_train": len(train_rows),
            "n_val": len(val_rows),
            "final": final,
        }

    val_x = gather(val_rows) if n_val else None
    val = float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n_params = sum(p.numel() for p in net.parameters())
    while epoch < cfg.epochs:
        order = train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))]
        batches = iter(order[i : i + cfg.batch_size] for i in range(pos * cfg.batch_size, len(order), cfg.batch_size))
        t_data = t_comp = 0.0
        t_epoch, n_here = time.perf_counter(), 0  # throughput counts this process's samples only
        net.train()
        while True:
            t0 = time.perf_counter()
            rows = next(batches, None)
            if rows is None:
                break
            x = gather(rows)  # B x d
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t1 = time.perf_counter()
            lvl = torch.randint(len(sigmas), (x.shape[0],), generator=noise_gen, device=device)  # B
            z = torch.randn(x.shape, generator=noise_gen, device=device)  # B x d
            loss = _dsm_loss(net, x, sigmas[lvl], z).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                # Warm-up: with a fixed 0.999 a 150-step run would serve weights that are
                # still 86% the (zero-output) initialisation; the ramp follows the weights early.
                decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
                for pe, pn in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(pn, 1.0 - decay)
            loss_v = float(loss.detach())  # syncs the device, so the compute time below is real
            t2 = time.perf_counter()
            t_data += t1 - t0
            t_comp += t2 - t1
            acc["seen"] += x.shape[0]
            n_here += x.shape[0]
            acc["loss_sum"] += loss_v * x.shape[0]
            pos += 1
            step += 1
            if cfg.log_every and step % cfg.log_every == 0:
                log.info("step %d loss %.4f %.0f samples/s (data %.0f%%)", step, loss_v, n_here / max(t_data + t_comp, 1e-9), 100 * t_data / max(t_data + t_comp, 1e-9))
            if last is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                _save(last, state(False, val))
            if on_step is not None:
                on_step(step)
        epoch += 1
        pos = 0
        seen, loss_sum = acc["seen"], acc["loss_sum"]
        acc = {"seen": 0, "loss_sum": 0.0}
        ema.eval()
        if val_x is not None:
            val, per = validation_loss(ema, val_x, sigmas, seed=cfg.seed + 2)
        else:
            per = []
        wall = time.perf_counter() - t_epoch
        rec = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "val_loss": val,
            "val_loss_per_sigma": per,
            "epoch_s": wall,
            "data_s": t_data,
            "compute_s": t_comp,
            "samples_per_s": n_here / max(t_data + t_comp, 1e-9),
            # 6 N flops per sample (forward + backward) of an MLP: a utilisation estimate.
            "model_tflops_per_s": 6 * n_params * n_here / max(t_comp, 1e-9) / 1e12,
            **_gpu_memory(device),
        }
        history.append(rec)
        log.info("epoch %d: train %.4f val %.4f, %.0f samples/s, data %.1fs compute %.1fs", epoch, rec["train_loss"], val, rec["samples_per_s"], t_data, t_comp)
        if last is not None:
            _save(last, state(False, val))
    ema.eval()
    report = None
    if val_x is not None and val_x.shape[0] >= 4:
        # Alternate held-out rows: one half fits the gammas and picks the metric's sigma,
        # the other reports losses neither choice has seen.
        report = calibrate(ema, val_x[0::2], val_x[1::2], sigmas, seed=cfg.seed + 5)
        val = float(np.mean(report["loss_model"]))
        log.info("metric sigma %.4g (%s); held-out loss per rung %s vs Gaussian %s", report["metric_sigma"],
                 "confirmed" if report["metric_sigma_confirmed"] else "NOT confirmed: no rung beats the Gaussian on held-out data",
                 [round(v, 4) for v in report["loss_model"]], [round(v, 4) for v in report["loss_gaussian"]])
    ck_path = None
    if out is not None:
        ck_path = out / "model.pt"
        _save(ck_path, {**state(True, val), "validation": report})
    return TrainResult(net=ema, val_loss=val, history=history, checkpoint=ck_path, validation=report)


def load_score_model(path: str | os.PathLike[str], *, device: str | None = None) -> tuple[ScoreNet, dict]:
    """The EMA network of a checkpoint (eval mode) and the checkpoint's metadata."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"no score checkpoint at {p}; run `ccpipe-geometry train RUN_DIR` first")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ck = torch.load(p, map_location=dev, weights_only=False)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{p} has checkpoint format {ck.get('format')}, expected {CHECKPOINT_FORMAT}; retrain")
    net = ScoreNet(ScoreModelConfig(**ck["model_config"])).to(dev)
    net.load_state_dict(ck["ema"])
    net.eval().requires_grad_(False)
    meta = {k: ck[k] for k in ("model_config", "train_config", "sigmas", "val_loss", "history", "step", "n_train", "n_val", "validation")}
    meta["metric_sigma"] = float(net.metric_sigma)
    return net, meta


def relative_score_error(
    score: Callable[[Tensor], Tensor], exact: Callable[[Tensor], Tensor], x: Tensor, *, tangential: bool = False
) -> float:
    """E|s_theta - s|^2 / E|s|^2 over the points x (N x d).

    ``tangential``: both scores projected onto the tangent plane of the unit sphere at x
    ((I - u u^T) s with u = x / |x|), the part a metric on the sphere reads.
    """
    with torch.no_grad():
        s_hat, s = score(x), exact(x)  # N x d
        if tangential:
            u = x / x.norm(dim=-1, keepdim=True)  # N x d
            s_hat = s_hat - (s_hat * u).sum(-1, keepdim=True) * u
            s = s - (s * u).sum(-1, keepdim=True) * u
    return float((s_hat - s).pow(2).sum(-1).mean() / s.pow(2).sum(-1).mean())


def vmf_validation(net: ScoreNet, vmf, *, n: int = 2000, n_paths: int = 32, path_points: int = 16, seed: int = 123) -> dict:
    """Score error against the exact score of a vMF mixture + Gaussian noise, per rung.

    For every rung sigma of the net's ladder (and the net's ``metric_sigma``):

    * ``noisy``: E|s_theta - s|^2 / E|s|^2 at held-out noisy points x = mu + sigma z (what
      denoising score matching trains on);
    * ``clean_tangential``: the tangential score at held-out clean points on the sphere
      (where the metric reads it for documents);
    * ``arcs_tangential``: the same along great-circle arcs between held-out clean points
      (where geodesic solvers and the upper bound read it).

    ``gaussian_*`` gives the same figures for the skip path alone (the affine-Gaussian
    baseline); predicting zero scores exactly 1.0 on every figure.
    """
    from geometry.distances import initial_curve

    rng = np.random.default_rng(seed)
    dev = next(net.parameters()).device
    clean = torch.from_numpy(vmf.sample_clean(n, rng)).double()  # n x d
    a = torch.from_numpy(vmf.sample_clean(n_paths, rng)).double()
    b = torch.from_numpy(vmf.sample_clean(n_paths, rng)).double()
    arcs = initial_curve(a, b, path_points, sphere=True)[:, 1:-1].reshape(-1, a.shape[1])  # (P*(T-2)) x d
    noise = torch.from_numpy(rng.standard_normal(clean.shape))  # n x d
    metric_sigma = float(net.metric_sigma)
    sigmas = sorted(set(net.config.sigmas().tolist()) | {metric_sigma}, reverse=True)
    per: dict = {}
    for sg in sigmas:
        v = vmf.with_sigma(sg)
        model = ScoreFunction(net, sg)
        def gauss(x: Tensor, sg: float = sg) -> Tensor:
            return net.gaussian_score(x.to(next(net.parameters())), torch.tensor(sg)).to(x)
        row = {}
        for name, pts, tan in (("noisy", clean + sg * noise, False), ("clean_tangential", clean, True), ("arcs_tangential", arcs, True)):
            row[name] = relative_score_error(model, v.score, pts.to(dev), tangential=tan)
            row[f"gaussian_{name}"] = relative_score_error(gauss, v.score, pts.to(dev), tangential=tan)
        per[sg] = row
    at = per[metric_sigma]
    return {
        "metric_sigma": metric_sigma,
        "tangential_rel_err_clean": at["clean_tangential"],
        "tangential_rel_err_arcs": at["arcs_tangential"],
        "gaussian_tangential_rel_err_clean": at["gaussian_clean_tangential"],
        "gaussian_tangential_rel_err_arcs": at["gaussian_arcs_tangential"],
        "per_sigma": per,
        "n_clean": n,
        "n_arc_points": int(arcs.shape[0]),
    }
