"""Matplotlib figures of an audit, returned as base64 PNG data URIs (the report embeds them).

The Agg backend draws without a display; every function closes its figure, so an audit
of many languages does not accumulate figures in memory.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BLUE, ORANGE, GREY = "#3b6ea8", "#d9822b", "#8a8a8a"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def funnel(stages: Sequence[str], docs: Sequence[int], chars: Sequence[int], title: str = "") -> str:
    """Documents and characters remaining after each step (two panels)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, vals, what, color in ((axes[0], docs, "documents", BLUE), (axes[1], chars, "characters", ORANGE)):
        y = np.arange(len(stages))[::-1]
        ax.barh(y, vals, color=color)
        ax.set_yticks(y, stages)
        top = max(vals) if len(vals) and max(vals) > 0 else 1
        for yi, v in zip(y, vals):
            ax.text(v, yi, f" {v:,} ({v / top:.0%})", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.35)
        ax.set_title(f"{what} through the pipeline{title}", fontsize=10)
    return _png(fig)


def hbar(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, color: str = BLUE) -> str:
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=color)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def language_mix(langs: Sequence[str], docs: Sequence[int], chars: Sequence[int]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.28 * len(langs) + 1.4))
    y = np.arange(len(langs))[::-1]
    td, tc = max(sum(docs), 1), max(sum(chars), 1)
    axes[0].barh(y, [d / td for d in docs], color=BLUE)
    axes[1].barh(y, [c / tc for c in chars], color=ORANGE)
    for ax, what in zip(axes, ("share of kept documents", "share of kept characters")):
        ax.set_yticks(y, langs, fontsize=8)
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(what, fontsize=10)
    return _png(fig)


def histograms(panels: Sequence[tuple[str, np.ndarray, Sequence[tuple[float, str]]]], xlabel: str, *, log_x: bool = False, cols: int = 4) -> str:
    """Small multiples: (title, values, [(vertical line x, label)]) per panel."""
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, vals, lines) in zip(axes.ravel(), panels):
        vals = np.asarray(vals, dtype=float)
        vals = vals[np.isfinite(vals)]
        if log_x:
            vals = vals[vals > 0]
        if len(vals):
            bins = np.geomspace(vals.min(), vals.max() * 1.0001, 30) if log_x and vals.min() < vals.max() else 30
            ax.hist(vals, bins=bins, color=BLUE)
        for x, lab in lines:
            ax.axvline(x, color=ORANGE, ls="--", lw=1)
            ax.text(x, ax.get_ylim()[1] * 0.9, f" {lab}", color=ORANGE, fontsize=7)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"{title} (n={len(vals)})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    return _png(fig)


def compare_bars(labels: Sequence[str], a: Sequence[float], b: Sequence[float], names: tuple[str, str], title: str, *, percent: bool = False) -> str:
    """Two runs side by side, one pair of bars per label."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.4))
    y = np.arange(len(labels))[::-1]
    ax.barh(y + 0.2, a, height=0.4, color=BLUE, label=names[0])
    ax.barh(y - 0.2, b, height=0.4, color=ORANGE, label=names[1])
    ax.set_yticks(y, labels, fontsize=8)
    if percent:
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def kept_vs_dropped(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], *, log_x: bool = True, cols: int = 2) -> str:
    """Per panel (title, kept values, dropped values): both distributions on shared bins, each
    as a share of its own documents, so shapes compare whatever the counts."""
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, kept, dropped) in zip(axes.ravel(), panels):
        sets = []
        for vals in (kept, dropped):
            v = np.asarray(vals, dtype=float)
            v = v[np.isfinite(v)]
            sets.append(v[v > 0] if log_x else v)
        both = np.concatenate(sets)
        if both.size:
            lo, hi = both.min(), both.max()
            bins = np.geomspace(lo, hi * 1.0001, 30) if log_x and lo < hi else 30
            for v, color, name in ((sets[0], BLUE, "kept"), (sets[1], ORANGE, "dropped")):
                if v.size:
                    ax.hist(v, bins=bins, weights=np.full(v.size, 1 / v.size), color=color, alpha=0.55,
                            label=f"{name} (n={v.size:,})")
            ax.legend(fontsize=7)
        if log_x:
            ax.set_xscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(title, fontsize=9)
    return _png(fig)


def stacked_hbar(labels: Sequence[str], a: Sequence[float], b: Sequence[float], names: tuple[str, str], title: str) -> str:
    """One bar per label: ``a`` then ``b`` stacked (e.g. kept and dropped documents)."""
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.4))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, a, color=BLUE, label=names[0])
    ax.barh(y, b, left=a, color=ORANGE, label=names[1])
    ax.set_xlim(0, max((x + z for x, z in zip(a, b)), default=1) * 1.08 or 1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str) -> str:
    """Vertical bars, one per label (e.g. clusters per cluster size)."""
    fig, ax = plt.subplots(figsize=(6, 2.4))
    x = np.arange(len(labels))
    ax.bar(x, values, color=BLUE, width=0.6)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylim(0, max(values, default=1) * 1.15 + 0.5)
    ax.set_xticks(x, labels, fontsize=8)
    for xi, v in zip(x, values):
        ax.text(xi, v, f"{v:,}", ha="center", va="bottom", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _png(fig)
