"""Noise-conditional score network s_theta(x, sigma) ~ grad log p_sigma(x).

Residual MLP conditioned on log sigma (Song & Ermon 2020 style): the network predicts
f(x, sigma) and the score is f / sigma, so the denoising target -z has unit variance at
every noise level. Inputs are scaled by 1 / sqrt(data_var + sigma^2) so every level sees
inputs of unit scale (data_var is the per-coordinate variance of the training data).
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
    n_sigmas: int = 10
    """Rungs of the geometric noise ladder."""
    sigma_min: float = 0.01
    """Smallest noise level; the metric uses the score at this level."""
    sigma_max: float = 1.0
    """Largest noise level, about the data diameter (Song & Ermon 2020, technique 1)."""
    data_var: float = 1.0 / 384
    """Per-coordinate variance of the data (unit vectors in 384-d: 1/384)."""

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.dim < 1 or self.hidden < 1 or self.blocks < 0 or self.n_sigmas < 1 or self.data_var <= 0:
            raise ValueError("dim, hidden, n_sigmas >= 1, blocks >= 0 and data_var > 0 required")

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


class ScoreNet(nn.Module):
    """s_theta(x, sigma) = f_theta(c_in x, log sigma) / sigma."""

    N_FREQ = 8

    def __init__(self, config: ScoreModelConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.inp = nn.Linear(config.dim, h)
        self.cond = nn.Sequential(nn.Linear(2 * self.N_FREQ + 1, h), nn.SiLU(), nn.Linear(h, h))
        self.blocks = nn.ModuleList(_Block(h) for _ in range(config.blocks))
        self.out_norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, config.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("freqs", torch.arange(1, self.N_FREQ + 1, dtype=torch.float32), persistent=False)

    def _sigma_features(self, log_sigma: Tensor) -> Tensor:
        ang = log_sigma[:, None] * self.freqs[None, :]  # B x F
        return torch.cat([log_sigma[:, None], torch.sin(ang), torch.cos(ang)], dim=-1)  # B x (2F+1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x: B x d, sigma: B (or scalar) -> score B x d."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            # One noise level for the whole batch (the metric's case): condition once, and
            # scale the weights instead of the B x d input and output (two passes fewer).
            cond = self.cond(self._sigma_features(torch.log(sigma)[None]))  # 1 x H
            c_in = torch.rsqrt(self.config.data_var + sigma * sigma)
            h = F.linear(x, self.inp.weight * c_in, self.inp.bias)  # B x H
            for blk in self.blocks:
                h = blk(h, cond)
            return F.linear(self.out_norm(h), self.out.weight / sigma, self.out.bias / sigma)  # B x d
        cond = self.cond(self._sigma_features(torch.log(sigma)))  # B x H
        c_in = torch.rsqrt(self.config.data_var + sigma * sigma)  # B
        h = self.inp(x * c_in[:, None])  # B x H
        for blk in self.blocks:
            h = blk(h, cond)
        f = self.out(self.out_norm(h))  # B x d
        return f / sigma[:, None]


class ScoreFunction:
    """Callable ``score(x: B x d) -> B x d`` at a fixed sigma, for :class:`SteinMetric`.

    Casts to the model's dtype and device and back, so float64 callers (tests) and CPU
    tensors work with a float32 model on GPU; differentiable for geodesics.
    """

    def __init__(self, net: ScoreNet, sigma: float | None = None) -> None:
        self.net = net
        self.sigma = float(sigma if sigma is not None else net.config.sigma_min)
        p = next(net.parameters())
        self.dtype, self.device = p.dtype, p.device

    def __call__(self, x: Tensor) -> Tensor:
        xin = x.to(dtype=self.dtype, device=self.device)  # B x d
        s = self.net(xin, torch.tensor(self.sigma, dtype=self.dtype, device=self.device))  # B x d
        return s.to(dtype=x.dtype, device=x.device)
