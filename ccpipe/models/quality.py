"""Build and fit the ``quality_score`` model (the step is ``ccpipe.steps.quality_score``).

Building has two parts:

1. **Profile** (no labels): per language, the 64 most frequent words of its
   reference prose, its characters per English character (parallel text), and the
   median of every signal on *held-out* reference prose; per signal, its robust
   spread over real web pages. Reference prose is split once, the same way for the
   is-reference classifier: XQuAD's 240 parallel paragraphs per language, the first
   160 for training, the rest held out; UD PUD's 1,000 parallel sentences, the
   first 700 for training. Real WET pages are split by a hash of their record id:
   one in four is held out from the classifier's negatives.
2. **Weights** (labels): the signals point the way ``SIGNS`` says (prior
   knowledge); ``equal`` weights fit two numbers, the common scale ``beta`` of the
   sum ``sum(sign * z) / k`` and a bias (logistic regression), so the ranking does
   not depend on the labels at all; ``free`` fits one weight per signal plus a
   bias (L2-penalised logistic regression, seven signals: a handful). Both report
   ROC AUC cross-validated over repeated stratified folds. No text classifier is
   trained on the labels.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ccpipe.errors import ModelError
from ccpipe.models.ref import group_paragraphs, paragraphs, roc_auc
from ccpipe.steps.quality_score import SIGNALS, SIGNS, UNSPACED, QualityModel, page_signals

log = logging.getLogger(__name__)

XQUAD_TRAIN = 160
"""XQuAD paragraphs (of 240 per language) the classifier trains on; the rest are held out."""
PUD_TRAIN = 700
"""UD PUD sentences (of 1,000 per language) the classifier trains on; the rest are held out."""
TOP_WORDS = 64
HELD_OUT_PAGE_MOD = 4
PROFILE_VERSION = 6
"""Bumped when the profile or fit changes, so set-up rebuilds the model."""


@dataclass
class RefSource:
    """One file of reference prose, split into training and held-out paragraphs."""

    lang: str
    path: Path
    parallel: str | None
    """``xquad`` or ``pud`` when its paragraphs are translations of the other languages'."""
    train: list[str]
    held_out: list[str]


def reference_sources(corpora: Path | None, text: Path | None) -> list[RefSource]:
    """The reference prose a machine has: ``corpora/docs/<lang>.txt`` and
    ``corpora/wiki/en.txt`` (training only), ``../shared/data/text`` XQuAD and UD
    (parallel parts split, see the module doc)."""
    out: list[RefSource] = []
    if corpora is not None:
        for p in sorted((corpora / "docs").glob("*.txt")) + sorted((corpora / "wiki").glob("*.txt")):
            out.append(RefSource(p.stem, p, None, paragraphs(p), []))
    if text is not None:
        for p in sorted((text / "xquad").glob("xquad_contexts.*.txt")):
            paras = paragraphs(p)
            out.append(RefSource(p.name.split(".")[1], p, "xquad", paras[:XQUAD_TRAIN], paras[XQUAD_TRAIN:]))
        for p in sorted((text / "ud").glob("*.tsv")):
            lang = p.name.split("_", 1)[0]
            paras = paragraphs(p)
            if "_pud-" in p.name:
                out.append(RefSource(lang, p, "pud", paras[:PUD_TRAIN], paras[PUD_TRAIN:]))
            else:
                out.append(RefSource(lang, p, None, paras, []))
    return out


def positive_documents(sources: Iterable[RefSource], min_chars: int = 1000) -> list[str]:
    """The classifier's positives: training paragraphs grouped per file into documents."""
    docs: list[str] = []
    for s in sources:
        docs.extend(group_paragraphs(s.train, min_chars))
    return docs


def held_out_documents(sources: Iterable[RefSource], min_chars: int = 1000) -> list[tuple[str, str]]:
    """(language, document) of held-out reference prose, grouped per file."""
    return [(s.lang, d) for s in sources for d in group_paragraphs(s.held_out, min_chars)]


def is_held_out_page(doc_id: str) -> bool:
    """One real web page in ``HELD_OUT_PAGE_MOD`` is kept out of the classifier's training."""
    return zlib.crc32(doc_id.encode("utf-8")) % HELD_OUT_PAGE_MOD == 0


def function_word_lists(sources: Iterable[RefSource], k: int = TOP_WORDS) -> dict[str, list[str]]:
    """Per language, the ``k`` most frequent lower-cased words of its training prose
    (non-space characters for scripts without spaces). Parallel text (XQuAD, UD PUD)
    is used where the language has it, so every language's list comes from the same
    encyclopedic and news content; others fall back to all their prose (the Debian
    documentation would otherwise put "click" and "select" among English's words)."""
    sources = list(sources)
    counts: dict[str, Counter] = {}
    parallel_langs = {s.lang for s in sources if s.parallel}
    for s in sources:
        if s.lang in parallel_langs and not s.parallel:
            continue
        c = counts.setdefault(s.lang, Counter())
        for p in s.train:
            if s.lang in UNSPACED:
                c.update(ch for ch in p if not ch.isspace())
            else:
                c.update(p.lower().split())
    return {lang: [w for w, _ in c.most_common(k)] for lang, c in sorted(counts.items()) if c}


def char_ratios(sources: Iterable[RefSource]) -> dict[str, float]:
    """Characters per English character of each language's parallel text (the same
    paragraphs translated); XQuAD first, UD PUD for languages XQuAD lacks."""
    chars: dict[tuple[str, str], int] = {}
    for s in sources:
        if s.parallel:
            chars[(s.parallel, s.lang)] = sum(map(len, s.train + s.held_out))
    out: dict[str, float] = {}
    for kind in ("xquad", "pud"):
        en = chars.get((kind, "en"))
        if not en:
            continue
        for (k, lang), n in sorted(chars.items()):
            if k == kind and lang not in out:
                out[lang] = round(n / en, 4)
    return out


class SignalReader:
    """Raw signals of texts with the pipeline's models: language id (unless the
    language is given), perplexity, is-reference score."""

    def __init__(self, profile: QualityModel, lid=None, perplexity=None, ref=None) -> None:
        self.profile, self.lid, self.perplexity, self.ref = profile, lid, perplexity, ref

    def read(self, text: str, lang: str | None = None) -> tuple[str, dict[str, float | None]]:
        if lang is None:
            lang, _ = self.lid.predict(text)
        pp = None
        if self.perplexity is not None:
            s = self.perplexity.scorer(lang)
            pp = s.perplexity(text) if s is not None else None
        ref = self.ref.score(text) if self.ref is not None else None
        return lang, page_signals(text, lang, ref, pp, self.profile)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def build_profile(sources: list[RefSource], web: list[tuple[str, dict]], held: list[tuple[str, dict]],
                  profile: QualityModel, cutoffs: dict[str, list[float]] | None = None) -> QualityModel:
    """Fill ``profile``'s centres and scales from signals of held-out reference
    documents (``held``: (language, signals)) and of real web pages (``web``)."""
    by_lang: dict[str, dict[str, list[float]]] = {}
    pooled: dict[str, list[float]] = {k: [] for k in SIGNALS}
    for lang, sig in held:
        for k, v in sig.items():
            if v is not None and k != "length":
                by_lang.setdefault(lang, {}).setdefault(k, []).append(v)
                pooled[k].append(v)
    center = {lang: {k: round(_median(v), 6) for k, v in sigs.items()} for lang, sigs in sorted(by_lang.items())}
    # a language with an LM but no held-out prose: the middle of its web perplexities
    for lang, table in (cutoffs or {}).items():
        if "perplexity" not in center.get(lang, {}) and table[50] > 0:
            center.setdefault(lang, {})["perplexity"] = round(math.log(table[50]), 6)
    default = {k: round(_median(v), 6) for k, v in pooled.items() if v}
    default.pop("perplexity", None)  # perplexities of two languages' LMs do not compare
    lengths = [sig["length"] for _, sig in web] or [sig["length"] for _, sig in held]
    default["length"] = round(_median(lengths), 6)
    profile.center, profile.default_center = center, default
    scale = {}
    spread_from = web if len(web) >= 20 else web + held
    for k in SIGNALS:
        centred = []
        for lang, sig in spread_from:
            c = center.get(lang, {}).get(k, default.get(k))
            if sig.get(k) is not None and c is not None:
                centred.append(sig[k] - c)
        if len(centred) >= 5:
            q1, q3 = np.percentile(centred, [25, 75])
            scale[k] = round(max(float(q3 - q1) / 1.349, float(np.std(centred)) / 4, 1e-3), 6)
        else:
            scale[k] = 1.0
    profile.scale = scale
    profile.info["profile"] = {"version": PROFILE_VERSION, "held_out_reference_docs": len(held),
                               "web_pages": len(web), "signals_per_language": {
                                   lang: sorted(v) for lang, v in center.items()}}
    return profile


# ----------------------------------------------------------------- fitting
def design(model: QualityModel, rows: list[tuple[str, dict]]) -> np.ndarray:
    """n x k matrix of z-scores (``SIGNALS`` order) of (language, signals) rows."""
    return np.array([[model.z(sig, lang)[k] for k in SIGNALS] for lang, sig in rows], np.float64).reshape(-1, len(SIGNALS))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 100) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression (penalty ``l2 / 2 * |w|^2``, bias free) by Newton's method."""
    n, k = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(k + 1)
    pen = np.full(k + 1, l2)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        grad = a.T @ (p - y) + pen * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fit_weights(z: np.ndarray, y: np.ndarray, mode: str = "equal", l2: float = 1.0) -> tuple[dict[str, float], float]:
    """Weights per signal and a bias; see the module doc for ``equal`` and ``free``."""
    signs = np.array([SIGNS[k] for k in SIGNALS], np.float64)
    if mode == "equal":
        (beta,), bias = fit_logistic((z @ signs / len(SIGNALS))[:, None], y, l2=0.0)
        w = beta * signs / len(SIGNALS)
    elif mode == "free":
        w, bias = fit_logistic(z, y, l2=l2)
    else:
        raise ValueError(f"weights must be 'equal' or 'free', got {mode!r}")
    return {k: round(float(v), 6) for k, v in zip(SIGNALS, w)}, round(bias, 6)


def stratified_folds(y: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    out: list[list[int]] = [[] for _ in range(folds)]
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        for i, j in enumerate(idx):
            out[i % folds].append(int(j))
    return [np.array(sorted(f)) for f in out]


def cross_validate(z: np.ndarray, y: np.ndarray, mode: str, folds: int = 5, repeats: int = 10,
                   seed: int = 0, l2: float = 1.0) -> dict[str, Any]:
    """ROC AUC of out-of-fold scores, over ``repeats`` stratified ``folds``-fold splits
    (mean, min, max), and a bootstrap interval of the first split's."""
    from ccpipe.evaluate import bootstrap_auc

    rng = np.random.default_rng(seed)
    aucs, first = [], None
    for _ in range(repeats):
        oof = np.zeros(len(y))
        for test in stratified_folds(y, folds, rng):
            train = np.setdiff1d(np.arange(len(y)), test)
            w, b = fit_weights(z[train], y[train], mode, l2)
            oof[test] = z[test] @ np.array([w[k] for k in SIGNALS]) + b
        aucs.append(roc_auc(oof, y))
        first = oof if first is None else first
    return {"mode": mode, "folds": folds, "repeats": repeats, "roc_auc_mean": round(float(np.mean(aucs)), 4),
            "roc_auc_min": round(float(np.min(aucs)), 4), "roc_auc_max": round(float(np.max(aucs)), 4),
            "ci95_first_repeat": [round(v, 4) for v in bootstrap_auc(first, y, 1000, seed)]}


def labels_digest(path: str | Path) -> str | None:
    """SHA-256 of a label file (``None`` when it cannot be read): how ``ccpipe eval`` knows
    the weights were fitted on the file it is given, wherever that file now lies."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except (OSError, TypeError, ValueError):
        return None


def fit_quality(model: QualityModel, rows: list[tuple[str, dict]], y: np.ndarray, mode: str = "equal",
                source: str = "") -> dict[str, Any]:
    """Fit ``model``'s weights on labelled rows; returns the cross-validated report."""
    y = np.asarray(y, np.float64)
    if len(set(y.tolist())) != 2 or len(y) < 20:
        raise ModelError(f"fitting quality_score needs at least 20 labelled pages of both classes, got {len(y)}")
    z = design(model, rows)
    report: dict[str, Any] = {"labels": source, "labels_sha256": labels_digest(source), "n": int(len(y)),
                              "n_good": int(y.sum()), "weights": mode,
                              "single_signal_roc_auc": {k: round(roc_auc(SIGNS[k] * z[:, i], y), 4)
                                                        for i, k in enumerate(SIGNALS) if np.any(z[:, i] != 0)},
                              "cross_validated": [cross_validate(z, y, m) for m in ("equal", "free")]}
    model.weights, model.bias = fit_weights(z, y, mode)
    if mode == "equal" and sum(SIGNS[k] * w for k, w in model.weights.items()) <= 0:
        log.warning("quality_score: the labels rank pages against every signal's direction (beta <= 0); "
                    "check the label file (1 must mean good)")
    report["fitted_weights"], report["fitted_bias"] = model.weights, model.bias
    report["in_sample_roc_auc"] = round(roc_auc(z @ np.array([model.weights[k] for k in SIGNALS]), y), 4)
    model.info["fit"] = report
    return report


def prior_weights() -> dict[str, float]:
    """Weights before any labels: every signal counts the same, in its direction."""
    return {k: SIGNS[k] / len(SIGNALS) for k in SIGNALS}


def language_report(model: QualityModel, held: list[tuple[str, dict]], web: list[tuple[str, dict]],
                    min_docs: int = 5) -> dict[str, Any]:
    """Per language: mean score of held-out reference prose and of held-out real web
    pages, and the ROC AUC of prose against web pages where both have ``min_docs``."""
    out: dict[str, Any] = {}
    langs = sorted({lang for lang, _ in held} | {lang for lang, _ in web})
    for lang in langs:
        r = [model.score(s, lang) for l, s in held if l == lang]
        w = [model.score(s, lang) for l, s in web if l == lang]
        entry: dict[str, Any] = {"reference_docs": len(r), "web_pages": len(w)}
        if r:
            entry["reference_mean"] = round(float(np.mean(r)), 3)
        if w:
            entry["web_mean"] = round(float(np.mean(w)), 3)
        if len(r) >= min_docs and len(w) >= min_docs:
            entry["roc_auc_reference_vs_web"] = round(roc_auc(np.array(r + w), np.array([1] * len(r) + [0] * len(w))), 4)
        out[lang] = entry
    return out


def save_report(path: Path, report: dict[str, Any]) -> None:
    path.with_name(path.stem + ".report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))


def refit(labels: str | Path, model_path: Path, out: Path, mode: str = "equal",
          config: str | None = None) -> dict[str, Any]:
    """Fit the weights of an existing model (its profile kept) on a label file, with
    the language-id, perplexity and is-reference models of ``config``; save to ``out``."""
    from ccpipe.config import load_config
    from ccpipe.evaluate import read_labels
    from ccpipe.steps.langid import LanguageId
    from ccpipe.steps.perplexity import Perplexity
    from ccpipe.steps.ref_classifier import RefClassifier

    cfg = load_config(config)
    model = QualityModel.load(model_path)
    rows = read_labels(labels, "text")
    lid = LanguageId(model=cfg.langid.model, max_chars=cfg.langid.max_chars)
    steps = [lid, Perplexity.from_config(cfg.perplexity), RefClassifier.from_config(cfg.ref)]
    for step in steps:
        if step is not None:
            step.prepare(None)  # type: ignore[arg-type]
    reader = SignalReader(model, *steps)
    signals = [reader.read(r["text"]) for r in rows]
    report = fit_quality(model, signals, np.array([r["label"] for r in rows]), mode, str(Path(labels).resolve()))
    model.save(out)
    return {"out": str(out), **report}
