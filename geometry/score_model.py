"""Noise-conditional score network s_theta(x, sigma) ~ grad log p_sigma(x).

    s_theta(x, sigma) = s_G(x, sigma) + f_theta(c_in x, log sigma) / sigma

* s_G is the exact score of the affine-Gaussian fit N(mu, Sigma) of the training data,
  smoothed at sigma: -(Sigma + sigma^2 I)^{-1} (x - mu). It is a parameter-free skip path
  from input to output (the role of EDM's c_skip): a residual MLP that squeezes 384 inputs
  through a 256-wide body and has no such path cannot even represent the affine part of the
  denoiser, and was measured worse than this Gaussian alone (relative tangential score error
  1.13 on a 384-d vMF mixture, worse than predicting zero). Sigma is the Ledoit-Wolf
  shrinkage estimate, so a few hundred points in 384-d still give an invertible fit.
* f_theta is a residual MLP conditioned on log sigma (Song & Ermon 2020), zero at
  initialisation, so an untrained network *is* the Gaussian baseline and training only
  adds what the data shows beyond it. Its inputs are scaled by 1 / sqrt(data_var + sigma^2)
  so every level sees inputs of unit scale.

With the sigma^2-weighted denoising loss |sigma s + z|^2 / d the network's target
f = -z - sigma s_G has at most unit variance at every level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(slots=True, frozen=True, kw_only=True)
class ScoreModelConfig:
    """Architecture and noise ladder; stored inside every checkpoint."""

    dim: int = 384
    """Input dimension (384 for all-MiniLM-L6-v2)."""
    hidden: int = 256
    """Width of the residual MLP. 256 x 2 blocks keeps a score evaluation under 1 MFLOP, which
    is what lets the upper-bound and geodesic modes meet their CPU throughput targets."""
    blocks: int = 2
    """Residual blocks."""
    n_sigmas: int = 6
    """Rungs of the geometric noise ladder."""
    sigma_min: float = 0.01
    """Smallest noise level. The metric reads the score at the rung training picks by
    validation (``ScoreNet.metric_sigma``), which may be larger."""
    sigma_max: float = 0.3
    """Largest noise level (see ``geometry.train.default_model_config``: 3 x diameter / sqrt(d),
    0.29 for unit vectors in 384-d)."""
    data_var: float = 1.0 / 384
    """Per-coordinate variance of the data (unit vectors in 384-d: 1/384)."""
    skip: str = "gaussian"
    """"gaussian": add the smoothed score of the data's Gaussian fit (see the module
    docstring); "none": the bare MLP (kept to measure what the skip path buys)."""

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.dim < 1 or self.hidden < 1 or self.blocks < 0 or self.n_sigmas < 1 or self.data_var <= 0:
            raise ValueError("dim, hidden, n_sigmas >= 1, blocks >= 0 and data_var > 0 required")
        if self.skip not in ("gaussian", "none"):
            raise ValueError(f"skip must be 'gaussian' or 'none', got {self.skip!r}")

    def sigmas(self) -> Tensor:
        """The ladder, largest first (n_sigmas)."""
        if self.n_sigmas == 1:
            return torch.tensor([self.sigma_min])
        return torch.logspace(math.log10(self.sigma_max), math.log10(self.sigma_min), self.n_sigmas)

    def to_dict(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        if cond.shape[0] == 1:
            # one noise level for all rows: fold it into the norm's bias (one pass fewer)
            n = F.layer_norm(h, self.norm.normalized_shape, self.norm.weight, self.norm.bias + cond[0], self.norm.eps)
        else:
            n = self.norm(h) + cond
        return h + self.fc2(self.act(self.fc1(n)))  # B x H


def fit_gaussian(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, eigenvalues and eigenvectors of the Ledoit-Wolf shrinkage covariance of x (N x d).

    Sigma = (1 - a) S + a (tr S / d) I with the shrinkage a that minimises the expected
    Frobenius error (Ledoit & Wolf 2004): with N < d the sample covariance S is singular and
    its Gaussian would call every unseen direction infinitely unlikely. float64 throughout.
    """
    x = x.double()
    n, d = x.shape
    mu = x.mean(0)  # d
    xc = x - mu  # N x d
    s = xc.T @ xc / n  # d x d
    m = float(torch.trace(s)) / d
    delta = float((s - m * torch.eye(d, dtype=s.dtype)).pow(2).sum()) / d
    # sum_k |x_k x_k^T - S|_F^2 = sum_k |x_k|^4 - N |S|_F^2 (the cross terms sum to N S).
    beta = (float(xc.pow(2).sum(-1).pow(2).sum()) - n * float(s.pow(2).sum())) / (n * n * d)
    a = 1.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    cov = (1.0 - a) * s + a * m * torch.eye(d, dtype=s.dtype)
    evals, evecs = torch.linalg.eigh(cov)
    floor = max(m, 1e-12) * 1e-6  # d x d rounding must not make a direction infinitely sharp
    return mu, evals.clamp_min(floor), evecs


class ScoreNet(nn.Module):
    """s_theta(x, sigma) = s_G(x, sigma) + gamma(sigma) f_theta(c_in x, log sigma) / sigma."""

    N_FREQ = 8

    def __init__(self, config: ScoreModelConfig) -> None:
        super().__init__()
        self.config = config
        h, d = config.hidden, config.dim
        self.inp = nn.Linear(d, h)
        self.cond = nn.Sequential(nn.Linear(2 * self.N_FREQ + 1, h), nn.SiLU(), nn.Linear(h, h))
        self.blocks = nn.ModuleList(_Block(h) for _ in range(config.blocks))
        self.out_norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("freqs", torch.arange(1, self.N_FREQ + 1, dtype=torch.float32), persistent=False)
        # The Gaussian skip: N(0, data_var I) until fit_gaussian's values are set.
        self.register_buffer("g_mean", torch.zeros(d))
        self.register_buffer("g_evals", torch.full((d,), float(config.data_var)))
        self.register_buffer("g_evecs", torch.eye(d))
        self.register_buffer("metric_sigma", torch.tensor(float(config.sigma_min)))
        """The noise level the metric reads the score at (chosen by validation in training)."""
        self.register_buffer("rung_gamma", torch.ones(config.n_sigmas))
        """Per rung, the weight of the network's departure from the Gaussian:
        s = s_G + gamma f / sigma, gamma fitted on held-out data after training (1 during
        training; interpolated in log sigma between rungs)."""
        self.register_buffer("log_ladder", torch.log(config.sigmas()).flip(0), persistent=False)  # L, ascending
        self._skip_cache: dict = {}

    def set_gaussian(self, mean: Tensor, evals: Tensor, evecs: Tensor) -> None:
        """Install the Gaussian fit (see :func:`fit_gaussian`) used by the skip path."""
        for name, v in (("g_mean", mean), ("g_evals", evals), ("g_evecs", evecs)):
            getattr(self, name).copy_(v.to(getattr(self, name)))
        self._skip_cache.clear()

    @torch.no_grad()
    def init_from_data(self, x: Tensor, *, generator: torch.Generator, scale: float = 4.0) -> None:
        """Data-dependent start: each first-layer row is a training point (centred on the
        Gaussian mean, unit norm, times ``scale``), and the first block's inner layer starts
        as 2 I, so its SiLU sees those similarities directly: every hidden unit starts as a
        rectified detector of closeness to one training point.

        Why: what the data holds beyond the Gaussian is mostly "which cluster is x in", a
        nonlinear function of such similarities. With the noisy denoising targets a randomly
        initialised MLP sat on the Gaussian's loss for 12 epochs (384-d vMF mixture, one rung
        sigma = 0.1, 20,000 points); with data rows alone it left that plateau after 4 to 7
        epochs depending on the run; with both it was below the Gaussian in the first epoch
        and within 3% of the exact score's loss after 5.
        """
        h = self.inp.weight.shape[0]
        rows = x[torch.randint(x.shape[0], (h,), generator=generator)].to(self.inp.weight)  # H x d
        w = rows - self.g_mean.to(rows)
        self.inp.weight.copy_(scale * w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if len(self.blocks):
            self.blocks[0].fc1.weight.copy_(2.0 * torch.eye(h, dtype=self.inp.weight.dtype))
            self.blocks[0].fc1.bias.zero_()

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self._skip_cache.clear()
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        self._skip_cache.clear()  # .to(), .double(): cached matrices follow the buffers
        return super()._apply(fn, recurse)

    def gamma(self, sigma: Tensor) -> Tensor:
        """rung_gamma at sigma (any shape): piecewise linear in log sigma, flat beyond the ends."""
        g = self.rung_gamma.flip(0).to(sigma.dtype)  # L, ascending sigma like log_ladder
        if g.numel() == 1:
            return g[0].expand_as(sigma)
        ls = torch.log(sigma).clamp(float(self.log_ladder[0]), float(self.log_ladder[-1]))
        lad = self.log_ladder.to(sigma.dtype)
        i = torch.searchsorted(lad, ls.contiguous()).clamp(1, lad.numel() - 1)
        w = (ls - lad[i - 1]) / (lad[i] - lad[i - 1])
        return g[i - 1] + w * (g[i] - g[i - 1])

    def _sigma_features(self, log_sigma: Tensor) -> Tensor:
        ang = log_sigma[:, None] * self.freqs[None, :]  # B x F
        return torch.cat([log_sigma[:, None], torch.sin(ang), torch.cos(ang)], dim=-1)  # B x (2F+1)

    def _skip_matrix(self, sigma: float) -> tuple[Tensor, Tensor]:
        """(A, b) with s_G(x, sigma) = x A + b for one sigma; A = -(Sigma + sigma^2 I)^{-1}.

        Cached per sigma (the metric calls with one sigma millions of times); the cache is
        cleared whenever the buffers change (set_gaussian, load_state_dict, .to()).
        """
        key = (sigma, self.g_evecs.dtype, self.g_evecs.device)
        hit = self._skip_cache.get(key)
        if hit is None:
            u = self.g_evecs.double()
            a = -(u / (self.g_evals.double() + sigma * sigma)[None, :]) @ u.T  # d x d
            b = -(self.g_mean.double() @ a)  # d
            hit = (a.to(self.g_evecs.dtype), b.to(self.g_evecs.dtype))
            if len(self._skip_cache) > 16:
                self._skip_cache.clear()
            self._skip_cache[key] = hit
        return hit

    def gaussian_score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The skip path alone: exact score of the sigma-smoothed Gaussian fit. x: B x d,
        sigma: B or scalar -> B x d."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            a, b = self._skip_matrix(float(sigma))
            return torch.addmm(b.to(x.dtype), x, a.to(x.dtype))  # B x d
        y = (x - self.g_mean.to(x.dtype)) @ self.g_evecs.to(x.dtype)  # B x d, eigen-coordinates
        y = y / (self.g_evals.to(x.dtype)[None, :] + (sigma * sigma)[:, None])  # B x d
        return -(y @ self.g_evecs.to(x.dtype).T)  # B x d

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: B x d, sigma: B (or scalar) -> score B x d."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        gauss = self.config.skip == "gaussian"
        if sigma.ndim == 0:
            # One noise level for the whole batch (the metric's case): condition once, and
            # scale the weights instead of the B x d input and output (two passes fewer).
            cond = self.cond(self._sigma_features(torch.log(sigma)[None]))  # 1 x H
            c_in = torch.rsqrt(self.config.data_var + sigma * sigma)
            h = F.linear(x, self.inp.weight * c_in, self.inp.bias)  # B x H
            for blk in self.blocks:
                h = blk(h, cond)
            k = self.gamma(sigma) / sigma
            if not gauss:
                return F.linear(self.out_norm(h), self.out.weight * k, self.out.bias * k)  # B x d
            a, b = self._skip_matrix(float(sigma))
            # s_G + gamma f / sigma as two accumulating matmuls: x A + b + norm(h) (k W)^T + k bias.
            out = torch.addmm(b.to(x.dtype) + self.out.bias * k, x, a.to(x.dtype))  # B x d
            return torch.addmm(out, self.out_norm(h), self.out.weight.T * k)  # B x d
        cond = self.cond(self._sigma_features(torch.log(sigma)))  # B x H
        c_in = torch.rsqrt(self.config.data_var + sigma * sigma)  # B
        h = self.inp(x * c_in[:, None])  # B x H
        for blk in self.blocks:
            h = blk(h, cond)
        f = self.out(self.out_norm(h))  # B x d
        s = f * (self.gamma(sigma) / sigma)[:, None]
        return s + self.gaussian_score(x, sigma) if gauss else s


class ScoreFunction:
    """Callable ``score(x: B x d) -> B x d`` at a fixed sigma, for :class:`SteinMetric`.

    ``sigma`` defaults to the network's ``metric_sigma`` (the rung training chose by
    validation; ``sigma_min`` for a network that was never validated).

    Casts to the model's dtype and device and back, so float64 callers (tests) and CPU
    tensors work with a float32 model on GPU; differentiable for geodesics.
    """

    def __init__(self, net: ScoreNet, sigma: float | None = None) -> None:
        self.net = net
        self.sigma = float(sigma if sigma is not None else net.metric_sigma)
        p = next(net.parameters())
        self.dtype, self.device = p.dtype, p.device

    def __call__(self, x: Tensor) -> Tensor:
        xin = x.to(dtype=self.dtype, device=self.device)  # B x d
        s = self.net(xin, torch.tensor(self.sigma, dtype=self.dtype, device=self.device))  # B x d
        return s.to(dtype=x.dtype, device=x.device)
