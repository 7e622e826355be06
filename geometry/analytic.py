"""Densities with exact scores, for tests, benchmarks and validating learned scores.

* :class:`IsotropicGaussian` and :class:`GaussianMixture` - torch, differentiable, so the
  geodesic solver can use them directly.
* :class:`VmfMixtureNoise` - a von Mises-Fisher mixture on the unit sphere S^{d-1} convolved
  with N(0, sigma^2 I). Its score is exact by Tweedie's formula,
  s(x) = (E[mu | x] - x) / sigma^2, and the posterior of mu given x under component k is again
  vMF with parameter a_k = kappa_k m_k + x / sigma^2 (|mu| = 1 makes the Gaussian factor
  exp(x . mu / sigma^2)). Bessel functions via ``scipy.special.ive`` (exponentially scaled,
  so kappa in the thousands does not overflow). numpy float64; a torch wrapper for the metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import ive
from torch import Tensor


@dataclass(slots=True, frozen=True, kw_only=True)
class IsotropicGaussian:
    """N(mean, sigma^2 I)."""

    mean: Tensor
    """d."""
    sigma: float = 1.0

    def score(self, x: Tensor) -> Tensor:
        return -(x - self.mean.to(x)) / self.sigma**2  # B x d

    def log_prob(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        sq = (x - self.mean.to(x)).pow(2).sum(-1)  # B
        return -0.5 * sq / self.sigma**2 - d * math.log(self.sigma) - 0.5 * d * math.log(2 * math.pi)


@dataclass(slots=True, frozen=True, kw_only=True)
class GaussianMixture:
    """sum_k w_k N(means_k, sigma^2 I) with a shared sigma."""

    means: Tensor
    """K x d."""
    sigma: float = 1.0
    weights: Tensor | None = None
    """K, summing to 1; uniform when None."""

    def _log_w(self, x: Tensor) -> Tensor:
        k = self.means.shape[0]
        if self.weights is None:
            return torch.full((k,), -math.log(k), dtype=x.dtype, device=x.device)
        return self.weights.to(x).log()

    def _log_joint(self, x: Tensor) -> Tensor:
        d = x.shape[-1]
        sq = torch.cdist(x, self.means.to(x)).pow(2)  # B x K
        norm = d * math.log(self.sigma) + 0.5 * d * math.log(2 * math.pi)
        return self._log_w(x)[None, :] - 0.5 * sq / self.sigma**2 - norm  # B x K

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._log_joint(x), dim=-1)  # B

    def score(self, x: Tensor) -> Tensor:
        # Differences computed directly (not through cdist) so gradients stay exact at the means.
        diff = x[:, None, :] - self.means.to(x)[None, :, :]  # B x K x d
        logj = self._log_w(x)[None, :] - 0.5 * diff.pow(2).sum(-1) / self.sigma**2  # B x K
        r = torch.softmax(logj, dim=-1)  # B x K
        return -(r[:, :, None] * diff).sum(1) / self.sigma**2  # B x d


def _log_vmf_norm(kappa: np.ndarray, d: int) -> np.ndarray:
    """log C_d(kappa) of the vMF density C_d(kappa) exp(kappa m . x) on S^{d-1}."""
    v = d / 2.0 - 1.0
    kappa = np.maximum(kappa, 1e-300)
    # log I_v(k) = log ive(v, k) + k; ive keeps large kappa finite.
    return v * np.log(kappa) - (d / 2.0) * np.log(2 * np.pi) - (np.log(ive(v, kappa)) + kappa)


def _bessel_ratio(kappa: np.ndarray, d: int) -> np.ndarray:
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa): the mean resultant length of a vMF."""
    v = d / 2.0 - 1.0
    kappa = np.maximum(kappa, 1e-300)
    return ive(v + 1.0, kappa) / ive(v, kappa)


@dataclass(slots=True, kw_only=True)
class VmfMixtureNoise:
    """sum_k w_k vMF(m_k, kappa_k) on S^{d-1}, convolved with N(0, sigma^2 I)."""

    means: np.ndarray
    """K x d unit vectors."""
    kappas: np.ndarray
    """K concentrations."""
    weights: np.ndarray
    """K mixture weights summing to 1."""
    sigma: float = 0.1
    """Std of the added Gaussian noise (the score is of the noisy density)."""
    _rng_state: dict = field(default_factory=dict, repr=False)

    @classmethod
    def random(cls, *, d: int, k: int, kappa: float, sigma: float, seed: int = 0) -> "VmfMixtureNoise":
        """K random unit means, equal weights and concentrations."""
        rng = np.random.default_rng(seed)
        m = rng.standard_normal((k, d))
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        return cls(means=m, kappas=np.full(k, float(kappa)), weights=np.full(k, 1.0 / k), sigma=sigma)

    def with_sigma(self, sigma: float) -> "VmfMixtureNoise":
        return VmfMixtureNoise(means=self.means, kappas=self.kappas, weights=self.weights, sigma=sigma)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample_clean(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points on the sphere from the vMF mixture (Wood's 1994 rejection sampler)."""
        d = self.dim
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, d))
        for k in np.unique(comp):
            idx = np.nonzero(comp == k)[0]
            out[idx] = _sample_vmf(self.means[k], float(self.kappas[k]), len(idx), rng)
        return out

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points from the noisy density."""
        return self.sample_clean(n, rng) + self.sigma * rng.standard_normal((n, self.dim))

    def log_prob_np(self, x: np.ndarray) -> np.ndarray:
        """Exact log density of the noisy mixture at x (n x d) -> n."""
        d = self.dim
        s2 = self.sigma**2
        a = self.kappas[None, :, None] * self.means[None, :, :] + x[:, None, :] / s2  # n x K x d
        na = np.linalg.norm(a, axis=-1)  # n x K
        logc = np.log(self.weights)[None, :] + _log_vmf_norm(self.kappas, d)[None, :] - _log_vmf_norm(na, d)
        m = logc.max(axis=1)
        lse = m + np.log(np.exp(logc - m[:, None]).sum(axis=1))
        return lse - ((x * x).sum(-1) + 1.0) / (2 * s2) - 0.5 * d * np.log(2 * np.pi * s2)

    def score_np(self, x: np.ndarray) -> np.ndarray:
        """Exact score of the noisy density at x (n x d, float64) -> n x d."""
        d = self.dim
        s2 = self.sigma**2
        a = self.kappas[None, :, None] * self.means[None, :, :] + x[:, None, :] / s2  # n x K x d
        na = np.linalg.norm(a, axis=-1)  # n x K
        # Component evidences: w_k C_d(kappa_k) / C_d(|a_k|) (shared Gaussian factors cancel).
        logr = np.log(self.weights)[None, :] + _log_vmf_norm(self.kappas, d)[None, :] - _log_vmf_norm(na, d)
        logr -= logr.max(axis=1, keepdims=True)
        r = np.exp(logr)
        r /= r.sum(axis=1, keepdims=True)  # n x K
        post_mean = (r * _bessel_ratio(na, d))[:, :, None] * a / na[:, :, None]  # n x K x d
        return (post_mean.sum(axis=1) - x) / s2  # n x d

    def score(self, x: Tensor) -> Tensor:
        """Torch wrapper (no autograd: use for upper bounds and validation, not geodesics).
        Rows go through in chunks: the n x K x d intermediate of 2,000 points, 32
        components in 384-d would be 200 MB at once."""
        xs = x.detach().cpu().double().numpy()
        step = max(1, 2**22 // max(1, len(self.weights) * self.dim))
        out = np.concatenate([self.score_np(xs[i : i + step]) for i in range(0, len(xs), step)]) if len(xs) else xs.copy()
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)


def _sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Wood (1994): sample w = mu . x by rejection, then a uniform tangent direction."""
    d = mu.shape[0]
    b = (d - 1) / (2 * kappa + math.sqrt(4 * kappa**2 + (d - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + (d - 1) * math.log(1 - x0**2)
    w = np.empty(n)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 8
        z = rng.beta((d - 1) / 2, (d - 1) / 2, size=m)
        cand = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        u = rng.uniform(size=m)
        ok = kappa * cand + (d - 1) * np.log(1 - x0 * cand) - c >= np.log(u)
        take = cand[ok][: n - filled]
        w[filled : filled + len(take)] = take
        filled += len(take)
    v = rng.standard_normal((n, d))
    v -= (v @ mu)[:, None] * mu[None, :]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w[:, None] * mu[None, :] + np.sqrt(np.clip(1 - w**2, 0, None))[:, None] * v
