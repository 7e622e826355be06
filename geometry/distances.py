"""Distances under a :class:`~geometry.metric.SteinMetric` between two batches of points.

Three modes, each returning a :class:`DistanceResult` that carries ``converged`` and
``energy`` for every pair:

* :func:`upper_bound` - Stein length of the straight segment (great-circle arc on the
  sphere). No optimisation; an upper bound on the geodesic distance up to quadrature.
* :func:`geodesic` - batched discrete energy minimisation (L-BFGS) over the interior points
  of a P-point curve, with perturbed and/or multiple starts so a curve started on a saddle
  (the straight line through a mode) does not stall there.
* graph distances live in :mod:`geometry.graph` (kNN graph + Dijkstra).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geometry.errors import NotConvergedError
from geometry.metric import SteinMetric

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True, kw_only=True)
class DistanceResult:
    """Distances between pairs (x_b, y_b); every entry says whether it can be trusted."""

    distance: Tensor
    """B: Stein length of the returned curve."""
    converged: Tensor
    """B bool: the solver met its tolerance (always True for closed-form modes unless NaN)."""
    energy: Tensor
    """B: discrete energy of the returned curve (= distance^2 at constant speed)."""
    mode: str
    """"geodesic", "upper" or "graph"."""
    iterations: int = 0
    """Solver iterations used (0 for modes without a solver)."""
    path: Tensor | None = None
    """B x P x d: the curve, when asked for."""

    def checked(self) -> Tensor:
        """The distances, raising :class:`NotConvergedError` if any pair did not converge."""
        bad = (~self.converged).nonzero().flatten().tolist()
        if bad:
            raise NotConvergedError(
                f"{self.mode}: {len(bad)} of {self.converged.numel()} pairs did not converge "
                f"(first: {bad[:5]}); raise max_iters, use more starts, or use mode 'upper'"
            )
        return self.distance


@dataclass(slots=True, frozen=True, kw_only=True)
class GeodesicConfig:
    """How geodesics are solved."""

    n_points: int = 32
    """Points on the curve, endpoints included (n_points - 1 segments)."""
    max_iters: int = 200
    """L-BFGS iterations at most, over all restarts."""
    grad_tol: float | None = None
    """Converged when every |dE/dc| <= grad_tol, with E normalised by the squared chord and c
    the dimensionless Sobolev coordinates; the length error is second order in it. None:
    1e-5 for float64 inputs, 1e-4 for float32 (whose rounding noise in a 384-d energy sits
    near 1e-5; 1e-4 still bounds the relative length error near 1e-8)."""
    n_starts: int = 1
    """Independent starts per pair; the lowest final energy wins."""
    perturb: float = 1e-2
    """Size of the random initial bend (relative to the chord); 0 starts on the straight
    curve, which stalls on a saddle when the straight curve is itself a geodesic."""
    seed: int = 0
    """Seed of the perturbations, so results are reproducible."""
    history_size: int = 20
    """L-BFGS memory."""

    def __post_init__(self) -> None:
        if self.n_points < 3:
            raise ValueError("n_points must be >= 3 (a geodesic needs interior points)")
        if self.n_starts < 1 or self.max_iters < 1:
            raise ValueError("n_starts and max_iters must be >= 1")
        if self.perturb < 0 or (self.grad_tol is not None and self.grad_tol <= 0):
            raise ValueError("perturb must be >= 0 and grad_tol > 0")


def _curve_weights(x: Tensor, y: Tensor, t: Tensor, *, sphere: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Points of the straight segment or great-circle arc as combinations of the ends.

    Returns (W, ends, bad): W (B x T x 2) such that ``W @ ends`` (ends = B x 2 x d, the
    unit ends on the sphere) are the points at parameters ``t`` (T), and ``bad`` (B bool)
    for antipodal pairs, whose arc is not unique. Building points, midpoints or segment
    vectors this way is one batched matmul each instead of several passes over B x T x d.
    """
    if not sphere:
        w = torch.stack([1.0 - t, t], dim=-1).expand(x.shape[0], -1, -1)  # B x T x 2
        return w, torch.stack([x, y], dim=1), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    x = x / x.norm(dim=-1, keepdim=True)  # B x d
    y = y / y.norm(dim=-1, keepdim=True)  # B x d
    cos = (x * y).sum(-1)  # B
    # 2 atan2(|x - y|, |x + y|) instead of arccos(cos): arccos loses half the digits near 0
    # (in float32 a point paired with itself came out 3e-4 rad apart).
    theta = 2.0 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))[:, None]  # B x 1
    sin = torch.sin(theta)  # B x 1
    small = sin.abs() < 1e-6  # B x 1
    # Nearly equal points: SLERP is ill-conditioned, the lerp is exact enough.
    safe_sin = torch.where(small, torch.ones_like(sin), sin)
    tt = t[None, :]  # 1 x T
    wa = torch.where(small, 1.0 - tt, torch.sin((1.0 - tt) * theta) / safe_sin)  # B x T
    wb = torch.where(small, tt, torch.sin(tt * theta) / safe_sin)  # B x T
    return torch.stack([wa, wb], dim=-1), torch.stack([x, y], dim=1), small[:, 0] & (cos < 0)


def initial_curve(x: Tensor, y: Tensor, n_points: int, *, sphere: bool) -> Tensor:
    """Straight segment, or great-circle arc (SLERP) on the sphere: B x d, B x d -> B x P x d."""
    t = torch.linspace(0.0, 1.0, n_points, dtype=x.dtype, device=x.device)  # P
    w, ends, anti = _curve_weights(x, y, t, sphere=sphere)
    pts = torch.bmm(w, ends)  # B x P x d
    if not sphere:
        return pts
    pts = pts / pts.norm(dim=-1, keepdim=True)  # B x P x d
    # Antipodal pairs have no unique arc (the lerp would jump through 0): NaN, so every
    # mode reports them as not converged instead of returning a number.
    if bool(anti.any()):
        pts = torch.where(anti[:, None, None], torch.full_like(pts, float("nan")), pts)
    return pts


def upper_bound(
    metric: SteinMetric, x: Tensor, y: Tensor, *, n_points: int = 32, return_path: bool = False
) -> DistanceResult:
    """Stein length of the straight segment (great-circle arc when ``metric.sphere``).

    An upper bound on the geodesic distance up to the O(N^-2) midpoint quadrature error.
    Segment vectors and midpoints come straight from the arc's parametrisation (two
    batched matmuls): on a great circle the normalised chord midpoint is the arc point at
    the half-step, and it is orthogonal to its chord, so the score needs no projection.
    """
    if n_points < 2:
        raise ValueError("n_points must be >= 2")
    with torch.no_grad():
        t = torch.linspace(0.0, 1.0, n_points, dtype=x.dtype, device=x.device)  # P
        t_all = torch.cat([t, 0.5 * (t[1:] + t[:-1])])  # P points, then P - 1 midpoints
        w, ends, anti = _curve_weights(x, y, t_all, sphere=metric.sphere)
        w_pts, w_mid = w[:, :n_points], w[:, n_points:]  # B x P x 2, B x (P-1) x 2
        seg = torch.bmm(w_pts[:, 1:] - w_pts[:, :-1], ends)  # B x (P-1) x d
        mid = torch.bmm(w_mid, ends)  # B x (P-1) x d, on the arc
        sq = metric.sq_lengths_at(mid, seg, tangent_chords=True)  # B x (P-1)
        length = sq.clamp_min(0.0).sqrt().sum(-1)  # B
        energy = (n_points - 1) * sq.sum(-1)  # B
        if bool(anti.any()):
            length = torch.where(anti, torch.full_like(length, float("nan")), length)
            energy = torch.where(anti, torch.full_like(energy, float("nan")), energy)
        pts = initial_curve(x, y, n_points, sphere=metric.sphere) if return_path else None
    return DistanceResult(
        distance=length,
        converged=torch.isfinite(length) & torch.isfinite(energy),
        energy=energy,
        mode="upper",
        path=pts,
    )


def _sobolev_basis(n_points: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """n x n matrix S Lambda^{-1/2} of the discrete sine transform (n = interior points).

    The DST diagonalises the second-difference operator with fixed ends, so writing the
    interior offsets as delta = a * S Lambda^{-1/2} c turns the Euclidean part of the energy
    into 1 + |c|^2: L-BFGS then sees a problem whose conditioning does not grow like N^2.
    """
    n_seg = n_points - 1
    n = n_points - 2
    j = torch.arange(1, n + 1, dtype=torch.float64)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    s = math.sqrt(2.0 / n_seg) * torch.sin(math.pi * j[:, None] * k[None, :] / n_seg)  # n x n
    eig = 4.0 * torch.sin(math.pi * k / (2 * n_seg)) ** 2  # n
    return (s / eig.sqrt()[None, :]).to(dtype=dtype, device=device)  # n x n


def geodesic(
    metric: SteinMetric,
    x: Tensor,
    y: Tensor,
    config: GeodesicConfig | None = None,
    *,
    return_path: bool = False,
) -> DistanceResult:
    """Geodesic distances between x_b and y_b (B x d each) by discrete energy minimisation.

    The interior points move; the endpoints stay. On the sphere the curve is renormalised
    after every offset (a retraction built into the parametrisation), so plain L-BFGS applies.
    Every pair gets ``converged`` (its normalised gradient met ``grad_tol``) and ``energy``.
    """
    cfg = config or GeodesicConfig()
    tol = cfg.grad_tol if cfg.grad_tol is not None else (1e-5 if x.dtype == torch.float64 else 1e-4)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be B x d, got {tuple(x.shape)} and {tuple(y.shape)}")
    b, d = x.shape
    p, n_seg, n_in = cfg.n_points, cfg.n_points - 1, cfg.n_points - 2
    r = cfg.n_starts
    xr = x.detach().repeat(r, 1)  # RB x d
    yr = y.detach().repeat(r, 1)  # RB x d
    base = initial_curve(xr, yr, p, sphere=metric.sphere)  # RB x P x d
    basis = _sobolev_basis(p, x.dtype, x.device)  # n x n
    chord = (yr - xr).norm(dim=-1)  # RB
    scale = (chord / math.sqrt(n_seg))[:, None, None]  # RB x 1 x 1

    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    c0 = torch.randn(r * b, n_in, d, generator=gen, dtype=torch.float64).to(x.dtype).to(x.device)
    c0 = c0 * (cfg.perturb / math.sqrt(d))  # RB x n x d
    if r > 1 and cfg.perturb == 0.0:
        log.warning("n_starts > 1 with perturb = 0: every start is the same curve")

    def build(c: Tensor, rows: Tensor) -> Tensor:
        offs = scale[rows] * torch.einsum("jk,bkd->bjd", basis, c)  # A x n x d
        inner = base[rows, 1:-1] + offs  # A x n x d
        if metric.sphere:
            inner = inner / inner.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.cat([base[rows, :1], inner, base[rows, -1:]], dim=1)  # A x P x d

    # Normalise every pair's energy to O(1) by its squared chord: costs no score evaluation,
    # and makes grad_tol a relative tolerance (the lam term only adds to the energy).
    e_ref = (chord * chord).clamp_min(1e-30)  # RB

    c_all = c0.clone()  # RB x n x d
    grad_max = torch.full((r * b,), math.inf, dtype=x.dtype, device=x.device)  # RB
    active = torch.arange(r * b, device=x.device)
    length_all = torch.full((r * b,), math.nan, dtype=x.dtype, device=x.device)  # RB
    energy_all = torch.full((r * b,), math.nan, dtype=x.dtype, device=x.device)  # RB
    iters = 0
    # L-BFGS shares one line search across the batch and can stop on a tiny step before
    # every pair passes the gradient test; each round restarts it, with a fresh history, on
    # the pairs still short of it, so converged pairs stop costing score evaluations.
    for _ in range(6):
        c = c_all[active].clone().requires_grad_(True)
        ref = e_ref[active]
        opt = torch.optim.LBFGS(
            [c],
            lr=1.0,
            max_iter=cfg.max_iters - iters,
            tolerance_grad=tol,
            tolerance_change=1e-14,
            history_size=cfg.history_size,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = (metric.energy(build(c, active)) / ref).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
            c.grad = None
            sq = metric.segment_sq_lengths(build(c, active))  # A x (P-1)
            e_norm = n_seg * sq.sum(-1) / ref  # A
            (grad,) = torch.autograd.grad(e_norm.sum(), c)  # A x n x d
        sq = sq.detach()
        length_all[active] = sq.clamp_min(0.0).sqrt().sum(-1)
        energy_all[active] = n_seg * sq.sum(-1)
        iters += int(opt.state[c].get("n_iter", 0))
        c_all[active] = c.detach()
        gm = grad.abs().amax(dim=(1, 2)) if n_in > 0 else torch.zeros_like(e_norm)  # A
        grad_max[active] = torch.where(torch.isfinite(gm), gm, torch.full_like(gm, math.inf)).detach()
        still = grad_max[active] > tol
        finite = torch.isfinite(grad_max[active])
        active = active[still & finite]
        if active.numel() == 0 or iters >= cfg.max_iters:
            break

    with torch.no_grad():
        pts = build(c_all, torch.arange(r * b, device=x.device)) if return_path else None  # RB x P x d
        # Every pair's length and energy come from the evaluation that tested its gradient.
        length, energy = length_all, energy_all  # RB, RB
        ok = (grad_max <= tol) & torch.isfinite(energy) & torch.isfinite(length)  # RB
        # Pick the start with the lowest energy per pair (NaN energies never win).
        e_pick = torch.where(torch.isfinite(energy), energy, torch.full_like(energy, math.inf))
        best = e_pick.view(r, b).argmin(dim=0)  # B
        rows = best * b + torch.arange(b, device=x.device)  # B
    n_bad = int((~ok[rows]).sum())
    if n_bad:
        log.info("geodesic: %d of %d pairs not converged after %d iterations", n_bad, b, iters)
    return DistanceResult(
        distance=length[rows],
        converged=ok[rows],
        energy=energy[rows],
        mode="geodesic",
        iterations=iters,
        path=pts[rows] if pts is not None else None,
    )


def euclidean_lower_bound(x: Tensor, y: Tensor, log_prob_x: Tensor, log_prob_y: Tensor, lam: float) -> Tensor:
    """sqrt(|x - y|^2 + lam (log p(x) - log p(y))^2) <= d(x, y) for a true score (B)."""
    return ((x - y).pow(2).sum(-1) + lam * (log_prob_x - log_prob_y).pow(2)).sqrt()
