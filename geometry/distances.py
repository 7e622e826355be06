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
    solver_distance: Tensor | None = None
    """B: geodesic mode only, the solver's own midpoint-rule length of its curve (``distance``
    is the same curve re-measured on a finer polyline; see :func:`geodesic`)."""

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
    """How geodesics are solved, and checked."""

    n_points: int = 32
    """Points on the curve, endpoints included (n_points - 1 segments)."""
    max_iters: int = 200
    """L-BFGS iterations at most per solve (a start, a saddle probe, a refinement)."""
    grad_tol: float | None = None
    """Converged when every |dE/dc| <= grad_tol, with E normalised by the squared chord and c
    the dimensionless Sobolev coordinates; the length error is second order in it. None:
    1e-5 when curve and score are float64, 1e-4 when either is float32 (a float32 score
    network makes the energy float32-accurate whatever the curve's dtype). A gradient below ~sqrt(eps E) cannot be
    verified by a line search (energy changes sink below rounding), so the test applied is
    |dE/dc| <= max(grad_tol, 4 sqrt(eps E)): at that floor the length error is a few eps."""
    n_starts: int = 1
    """Independent starts per pair; the shortest re-measured curve wins."""
    perturb: float = 1e-2
    """Size of the random initial bend (relative to the chord); 0 starts on the straight
    curve (which is itself a geodesic, and a saddle, when it crosses a mode)."""
    saddle_probe: float = 1e-2
    """Every converged curve is bent by a random offset of this size (relative to the
    chord) and solved again: a minimum comes back to its energy, a saddle (a curve through
    a mode) falls to a lower one, and the lower curve is what is returned. 0 skips the
    probe; ``converged`` then only means "stationary"."""
    remeasure_factor: int = 4
    """The returned length is the returned curve's length re-measured with every segment
    split into this many (midpoint rule on the finer polyline), so a solver that parks
    midpoints where the score vanishes cannot shorten a curve by hiding its steep parts."""
    remeasure_rtol: float = 1e-3
    """``converged`` is False when the solver's own length and the re-measured one differ by
    more than this (relative): the curve is too coarse for its metric."""
    refine: int = 2
    """Times a pair whose lengths disagree is solved again with its segments halved
    (2P - 1 points, starting from its curve) before it is reported not converged."""
    seed: int = 0
    """Seed of the perturbations, so results are reproducible."""
    history_size: int = 20
    """L-BFGS memory."""

    def __post_init__(self) -> None:
        if self.n_points < 3:
            raise ValueError("n_points must be >= 3 (a geodesic needs interior points)")
        if self.n_starts < 1 or self.max_iters < 1:
            raise ValueError("n_starts and max_iters must be >= 1")
        if self.perturb < 0 or self.saddle_probe < 0 or (self.grad_tol is not None and self.grad_tol <= 0):
            raise ValueError("perturb and saddle_probe must be >= 0 and grad_tol > 0")
        if self.remeasure_factor < 1 or self.remeasure_rtol <= 0 or self.refine < 0:
            raise ValueError("remeasure_factor >= 1, remeasure_rtol > 0 and refine >= 0 required")


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


def upsample(pts: Tensor, factor: int, *, sphere: bool) -> Tensor:
    """The same polyline with every segment split into ``factor``: B x P x d -> B x ((P-1) factor + 1) x d.

    On the sphere the new points are renormalised, i.e. they lie on the great-circle arcs
    between consecutive points, which is the curve the metric's segments measure.
    """
    if factor == 1:
        return pts
    b, p, d = pts.shape
    w = torch.arange(factor, dtype=pts.dtype, device=pts.device) / factor  # f
    a, c = pts[:, :-1, None, :], pts[:, 1:, None, :]  # B x (P-1) x 1 x d
    sub = a + w[None, None, :, None] * (c - a)  # B x (P-1) x f x d
    out = torch.cat([sub.reshape(b, (p - 1) * factor, d), pts[:, -1:]], dim=1)  # B x P' x d
    if sphere:
        out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out


@dataclass(slots=True)
class _Solved:
    """Per-row state of a batch of curves after a solve."""

    curve: Tensor
    """R x P x d."""
    length: Tensor
    """R: the solver's own (midpoint-rule) length."""
    energy: Tensor
    """R."""
    grad: Tensor
    """R: max |dE/dc| of the chord-normalised energy."""
    iters: int


def _solve(metric: SteinMetric, base: Tensor, c0: Tensor, cfg: GeodesicConfig, tol: float) -> _Solved:
    """Minimise the discrete energy of base + offsets (offsets in the Sobolev basis, starting
    at c0) over the interior points; endpoints fixed. base: R x P x d, c0: R x n x d."""
    r, p, d = base.shape
    n_seg, n_in = p - 1, p - 2
    basis = _sobolev_basis(p, base.dtype, base.device)  # n x n
    chord = (base[:, -1] - base[:, 0]).norm(dim=-1)  # R
    scale = (chord / math.sqrt(n_seg))[:, None, None]  # R x 1 x 1

    def build(c: Tensor, rows: Tensor) -> Tensor:
        offs = scale[rows] * torch.einsum("jk,bkd->bjd", basis, c)  # A x n x d
        inner = base[rows, 1:-1] + offs  # A x n x d
        if metric.sphere:
            inner = inner / inner.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.cat([base[rows, :1], inner, base[rows, -1:]], dim=1)  # A x P x d

    # Normalise every pair's energy to O(1) by its squared chord: costs no score evaluation,
    # and makes grad_tol a relative tolerance (the lam term only adds to the energy).
    e_ref = (chord * chord).clamp_min(1e-30)  # R
    eps = working_eps(metric, base.dtype)
    c_all = c0.clone()  # R x n x d
    grad_max = torch.full((r,), math.inf, dtype=base.dtype, device=base.device)  # R
    length_all = torch.full((r,), math.nan, dtype=base.dtype, device=base.device)  # R
    energy_all = torch.full((r,), math.nan, dtype=base.dtype, device=base.device)  # R
    passed = torch.zeros(r, dtype=torch.bool, device=base.device)  # R
    active = torch.arange(r, device=base.device)
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
            max_iter=max(cfg.max_iters - iters, 1),
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
        gm = torch.where(torch.isfinite(gm), gm, torch.full_like(gm, math.inf)).detach()
        grad_max[active] = gm
        # The rounding floor: below ~sqrt(eps E) the line search cannot see the energy fall,
        # and what is left of the length error is a few eps (see GeodesicConfig.grad_tol).
        floor = 4.0 * (eps * e_norm.detach().abs()).sqrt()  # A
        ok = gm <= torch.maximum(torch.full_like(gm, tol), floor)
        passed[active] = ok
        active = active[~ok & torch.isfinite(gm)]
        if active.numel() == 0 or iters >= cfg.max_iters:
            break
    with torch.no_grad():
        curve = build(c_all, torch.arange(r, device=base.device))  # R x P x d
    ok_all = passed & torch.isfinite(energy_all) & torch.isfinite(length_all)
    return _Solved(curve=curve, length=length_all, energy=energy_all, grad=torch.where(ok_all, grad_max, torch.full_like(grad_max, math.inf)), iters=iters)


def working_eps(metric: SteinMetric, dtype: torch.dtype) -> float:
    """Machine epsilon of the energy's arithmetic: the coarser of the curve's dtype and the
    score's (a float32 network read by float64 curves gives float32-accurate energies)."""
    sdt = getattr(metric.score, "dtype", dtype)
    return max(torch.finfo(dtype).eps, torch.finfo(sdt).eps if isinstance(sdt, torch.dtype) and sdt.is_floating_point else 0.0)


def _offsets(rows: int, n_in: int, d: int, size: float, seed: int, like: Tensor) -> Tensor:
    """Seeded random Sobolev coefficients of relative size ``size``: rows x n x d."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = torch.randn(rows, n_in, d, generator=gen, dtype=torch.float64).to(like.dtype).to(like.device)
    return c * (size / math.sqrt(d))


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
    Then every curve is checked, and ``converged`` is True only when all checks pass:

    1. stationarity: the normalised energy gradient met ``grad_tol`` (or its rounding floor);
    2. second order: the curve, bent by ``saddle_probe`` and solved again, did not fall to a
       lower energy (if it did, it was a saddle and the lower curve replaces it);
    3. resolution: its length re-measured on a ``remeasure_factor`` times finer polyline
       agrees with the solver's own to ``remeasure_rtol`` (if not, the pair is solved again
       with halved segments, ``refine`` times).

    ``distance`` is the re-measured length of the returned curve (a curve's length, so an
    upper bound on the geodesic up to the fine quadrature), ``energy`` the solver's.
    """
    cfg = config or GeodesicConfig()
    tol = cfg.grad_tol if cfg.grad_tol is not None else (1e-5 if working_eps(metric, x.dtype) < 1e-10 else 1e-4)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be B x d, got {tuple(x.shape)} and {tuple(y.shape)}")
    b, d = x.shape
    p, n_in, r = cfg.n_points, cfg.n_points - 2, cfg.n_starts
    xr = x.detach().repeat(r, 1)  # RB x d
    yr = y.detach().repeat(r, 1)  # RB x d
    base = initial_curve(xr, yr, p, sphere=metric.sphere)  # RB x P x d
    if r > 1 and cfg.perturb == 0.0:
        log.warning("n_starts > 1 with perturb = 0: every start is the same curve")
    st = _solve(metric, base, _offsets(r * b, n_in, d, cfg.perturb, cfg.seed, x), cfg, tol)
    iters = st.iters
    curve, energy, solver_len, grad = st.curve, st.energy, st.length, st.grad
    stationary = torch.isfinite(grad)  # RB
    saddle_left = torch.zeros_like(stationary)  # a saddle whose escape did not converge

    # 2. Second-order probe of every stationary curve.
    probe_rows = stationary.nonzero().flatten()
    if cfg.saddle_probe > 0 and probe_rows.numel() > 0:
        c_probe = _offsets(probe_rows.numel(), n_in, d, cfg.saddle_probe, cfg.seed + 7919, x)
        pr = _solve(metric, curve[probe_rows], c_probe, cfg, tol)
        iters += pr.iters
        e0 = energy[probe_rows]
        lower = torch.isfinite(pr.energy) & (pr.energy < e0 * (1.0 - 1e-6))  # P
        fell = lower & (pr.energy < e0 * (1.0 - 1e-4))  # a real drop: the first curve was a saddle
        take = lower & torch.isfinite(pr.grad)
        rows = probe_rows[take]
        curve[rows], energy[rows], solver_len[rows], grad[rows] = pr.curve[take], pr.energy[take], pr.length[take], pr.grad[take]
        bad = probe_rows[fell & ~torch.isfinite(pr.grad)]
        saddle_left[bad] = True
        n_saddle = int(fell.sum())
        if n_saddle:
            log.info("geodesic: %d of %d curves were saddles (probe fell to a lower energy)", n_saddle, probe_rows.numel())

    # 3. Re-measure on a finer polyline; refine the pairs whose lengths disagree.
    with torch.no_grad():
        fine = metric.length(upsample(curve, cfg.remeasure_factor, sphere=metric.sphere))  # RB
    agree = (fine - solver_len).abs() <= cfg.remeasure_rtol * fine.abs()
    paths = [curve[i] for i in range(curve.shape[0])] if return_path else None
    redo = (~agree & torch.isfinite(fine)).nonzero().flatten()
    sub = curve[redo]  # A x P_k x d: rows refined k times all have the same number of points
    for k in range(1, cfg.refine + 1):
        if redo.numel() == 0:
            break
        base2 = upsample(sub, 2, sphere=metric.sphere)  # A x (2 P_k - 1) x d
        rf = _solve(metric, base2, torch.zeros(redo.numel(), base2.shape[1] - 2, d, dtype=x.dtype, device=x.device), cfg, tol)
        iters += rf.iters
        with torch.no_grad():
            f2 = metric.length(upsample(rf.curve, cfg.remeasure_factor, sphere=metric.sphere))  # A
        fine[redo], solver_len[redo], energy[redo], grad[redo] = f2, rf.length, rf.energy, rf.grad
        agree[redo] = (f2 - rf.length).abs() <= cfg.remeasure_rtol * f2.abs()
        if paths is not None:
            for j, i in enumerate(redo.tolist()):
                paths[i] = rf.curve[j, :: 2**k]  # the caller's P points (every 2^k-th of the refined curve)
        keep = ~agree[redo] & torch.isfinite(f2)
        redo, sub = redo[keep], rf.curve[keep]
    n_coarse = int((~agree).sum())
    if n_coarse:
        log.info("geodesic: %d curves too coarse for their metric (re-measured length off by > %g)", n_coarse, cfg.remeasure_rtol)

    with torch.no_grad():
        ok = torch.isfinite(grad) & agree & ~saddle_left & torch.isfinite(fine) & torch.isfinite(energy)  # RB
        # The shortest re-measured curve over the starts (NaN lengths never win).
        pick = torch.where(torch.isfinite(fine), fine, torch.full_like(fine, math.inf))
        best = pick.view(r, b).argmin(dim=0)  # B
        rows = best * b + torch.arange(b, device=x.device)  # B
        pts = torch.stack([paths[i] for i in rows.tolist()]) if paths is not None else None
    n_bad = int((~ok[rows]).sum())
    if n_bad:
        log.info("geodesic: %d of %d pairs not converged after %d iterations", n_bad, b, iters)
    return DistanceResult(
        distance=fine[rows],
        converged=ok[rows],
        energy=energy[rows],
        mode="geodesic",
        iterations=iters,
        path=pts,
        solver_distance=solver_len[rows],
    )


def euclidean_lower_bound(x: Tensor, y: Tensor, log_prob_x: Tensor, log_prob_y: Tensor, lam: float) -> Tensor:
    """sqrt(|x - y|^2 + lam (log p(x) - log p(y))^2) <= d(x, y) for a true score (B)."""
    return ((x - y).pow(2).sum(-1) + lam * (log_prob_x - log_prob_y).pow(2)).sqrt()
