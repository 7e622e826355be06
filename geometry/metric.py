"""The Stein-score metric g(x) = I + lam * s(x) s(x)^T and discrete curve lengths.

Everything geometric in this package derives from :class:`SteinMetric`: a score callable,
a ``lam`` and whether curves live on the unit sphere. The metric is rank-one on top of the
identity, so a curve's length needs only the score at segment midpoints:

    L = sum_i sqrt(|D_i|^2 + lam (s(m_i) . D_i)^2),     E = N sum_i (|D_i|^2 + lam (s(m_i) . D_i)^2)

with D_i = x_{i+1} - x_i, m_i the segment midpoint and N the number of segments. E is the
discrete energy of a curve on t in [0, 1]; at constant speed E = L^2, otherwise L^2 <= E.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]


@dataclass(slots=True, frozen=True, kw_only=True)
class SteinMetric:
    """g(x) = I + lam s(x) s(x)^T for a score callable ``score(x: B x d) -> B x d``."""

    score: ScoreFn
    """Score function grad log p; must be differentiable (autograd) for geodesics."""
    lam: float
    """Weight of the log-density term; units of length^2 (see :func:`scale_free_lambda`)."""
    sphere: bool = False
    """Curves live on the unit sphere: points are renormalised and the score projected
    onto the tangent plane, so the radial part of a smoothed score cannot act as a barrier."""

    def __post_init__(self) -> None:
        if not (self.lam >= 0.0 and math.isfinite(self.lam)):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam}")

    def field(self, x: Tensor) -> Tensor:
        """The score the metric uses at x: tangential on the sphere, as given otherwise."""
        s = self.score(x)  # B x d
        if self.sphere:
            # (I - x x^T) s with |x| = 1: the radial component has no say on the sphere.
            s = s - (s * x).sum(-1, keepdim=True) * x  # B x d
        return s

    def segment_sq_lengths(self, pts: Tensor) -> Tensor:
        """Squared Stein lengths of the segments of a batch of polylines.

        pts: B x P x d (P points, P - 1 segments) -> B x (P - 1).
        """
        seg = pts[:, 1:] - pts[:, :-1]  # B x (P-1) x d
        if self.lam == 0.0:
            return torch.linalg.vecdot(seg, seg)
        mid = 0.5 * (pts[:, 1:] + pts[:, :-1])  # B x (P-1) x d
        if self.sphere:
            mid = mid / mid.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # B x (P-1) x d
        return self.sq_lengths_at(mid, seg)

    def sq_lengths_at(self, mid: Tensor, seg: Tensor, *, tangent_chords: bool = False) -> Tensor:
        """|D|^2 + lam (s(m) . D)^2 for segment vectors D with the score taken at m.

        mid, seg: B x S x d -> B x S. On the sphere the score's tangential part at m is
        used: s_t . D = s . D - (s . m)(m . D). ``tangent_chords`` says m . D = 0 already
        (m the arc midpoint of a chord of a great circle), which skips two passes.
        """
        b, n, d = seg.shape
        sq = torch.linalg.vecdot(seg, seg)  # B x S
        if self.lam == 0.0:
            return sq
        s = self.score(mid.reshape(-1, d)).reshape(b, n, d)  # B x S x d
        sd = torch.linalg.vecdot(s, seg)  # B x S
        if self.sphere and not tangent_chords:
            sd = sd - torch.linalg.vecdot(s, mid) * torch.linalg.vecdot(mid, seg)
        return sq + self.lam * sd * sd

    def length(self, pts: Tensor) -> Tensor:
        """Stein length of each polyline: B x P x d -> B."""
        return self.segment_sq_lengths(pts).clamp_min(0.0).sqrt().sum(-1)

    def energy(self, pts: Tensor) -> Tensor:
        """Discrete energy N sum_i |D_i|_g^2 of each polyline: B x P x d -> B."""
        return (pts.shape[1] - 1) * self.segment_sq_lengths(pts).sum(-1)

    def length_and_energy(self, pts: Tensor) -> tuple[Tensor, Tensor]:
        """Both at the cost of one score evaluation: B x P x d -> (B, B)."""
        sq = self.segment_sq_lengths(pts)  # B x (P-1)
        return sq.clamp_min(0.0).sqrt().sum(-1), (pts.shape[1] - 1) * sq.sum(-1)


def scale_free_lambda(score: ScoreFn, points: Tensor, *, c: float = 1.0, sphere: bool = False) -> float:
    """lam = c / median |s(x)|^2 over ``points`` (data points, N x d).

    Scaling the data by a scales s by 1/a, so lam scales by a^2 and lam (s . dx)^2 scales like
    |dx|^2: the metric's shape does not depend on the units of the embedding, only on c.
    c = 1 means "at a typical data point, moving one score-length-inverse along the score costs
    twice what a level-set move costs". On the sphere the tangential score is used.
    """
    with torch.no_grad():
        s = SteinMetric(score=score, lam=0.0, sphere=sphere).field(points)  # N x d
        med = float((s * s).sum(-1).median())
    if not med > 0.0:
        raise ValueError("median squared score is zero; cannot set a scale-free lambda")
    return c / med
