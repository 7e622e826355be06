"""``ccpipe eval quality``: how well the pipeline's quality signals agree with people.

Users bring labels, one JSON object a line: ``{"text": ..., "label": 0|1}`` (1 = good
training text), or ``{"id": ..., "label": ...}`` with ``--run OUT`` to look the
documents up in a finished run by WARC-Record-ID. For every signal column the
command prints the ROC AUC with a bootstrap interval (documents resampled with
replacement), and for every configured drop threshold what it would drop: how
many pages, the share of them people called poor (drop precision), the share of
poor pages it catches (drop recall) and the share of good pages it keeps.

On texts, the pipeline's own scoring steps run on each text with the configured
models (language id, perplexity, is-reference, Gopher rules, quality_score); no
step drops anything here, so every labelled page is scored. Document length in
characters is always listed: it is the trivial baseline a signal must beat.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ccpipe.cli import command
from ccpipe.config import PipelineConfig
from ccpipe.document import Document
from ccpipe.errors import InputError
from ccpipe.models.ref import roc_auc

log = logging.getLogger(__name__)

MAX_LOGGED = 5


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, n: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC (resamples lacking a class are redrawn)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    rng = np.random.default_rng(seed)
    m = len(scores)
    values = []
    while len(values) < n:
        idx = rng.integers(0, m, m)
        y = labels[idx]
        if y.all() or not y.any():
            continue
        values.append(roc_auc(scores[idx], y))
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def drop_figures(dropped: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """What a filter that drops ``dropped`` does to labelled pages (label 1 = good)."""
    dropped, good = np.asarray(dropped, bool), np.asarray(labels, bool)
    n_drop = int(dropped.sum())
    poor_dropped = int((dropped & ~good).sum())
    return {
        "dropped": n_drop,
        "drop_precision": round(poor_dropped / n_drop, 4) if n_drop else None,
        "drop_recall": round(poor_dropped / int((~good).sum()), 4) if (~good).any() else None,
        "good_kept": round(int((~dropped & good).sum()) / int(good.sum()), 4) if good.any() else None,
    }


def read_labels(path: str | Path, key: str = "text") -> list[dict[str, Any]]:
    """Rows with ``key`` (``text`` or ``id``) and a 0/1 ``label``; a malformed line is
    counted, logged (the first few) and skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file {path} not found")
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            problem = None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"not JSON ({e.msg})"
            else:
                if not isinstance(row, dict):
                    problem = "not a JSON object"
                elif not isinstance(row.get(key), str):
                    problem = f"no string {key!r}"
                elif row.get("label") not in (0, 1, True, False):
                    problem = f"label must be 0 or 1, got {row.get('label')!r}"
            if problem:
                bad += 1
                if bad <= MAX_LOGGED:
                    log.warning("%s line %d skipped: %s", path, i, problem)
                continue
            rows.append({key: row[key], "label": int(row["label"])})
    if bad:
        log.warning("%s: %d malformed line(s) skipped, %d used", path, bad, len(rows))
    labels = {r["label"] for r in rows}
    if labels != {0, 1}:
        raise InputError(f"{path}: need rows with {key!r} and label 0 and 1 (both classes); "
                         f"got {len(rows)} usable row(s) with labels {sorted(labels)}")
    return rows


@dataclass
class Signal:
    """One column to evaluate: higher ``values`` = better page; ``drop`` marks what the
    configured threshold would drop (``None``: no threshold)."""

    name: str
    values: np.ndarray
    drop: np.ndarray | None = None
    threshold: str = ""


def evaluate_signals(signals: Iterable[Signal], labels: np.ndarray, *, bootstrap: int = 1000,
                     seed: int = 0) -> list[dict[str, Any]]:
    """One result per signal over the pages where it is defined (not NaN)."""
    labels = np.asarray(labels, np.int64)
    out = []
    for s in signals:
        ok = ~np.isnan(s.values)
        y = labels[ok]
        r: dict[str, Any] = {"signal": s.name, "n": int(ok.sum()), "n_good": int(y.sum())}
        if 0 < y.sum() < len(y):
            r["roc_auc"] = round(roc_auc(s.values[ok], y), 4)
            r["ci95"] = [round(v, 4) for v in bootstrap_auc(s.values[ok], y, bootstrap, seed)] if bootstrap else None
        else:
            r["roc_auc"], r["ci95"] = None, None
        if s.drop is not None:
            r["threshold"] = s.threshold
            r.update(drop_figures(s.drop[ok], y))
        out.append(r)
    return out


def _doc(text: str, i: int) -> Document:
    return Document(id=f"labelled-{i}", url="", date_download="", digest="", title="", raw_content=text)


class TextScorer:
    """The pipeline's scoring steps, applied to single texts without dropping any."""

    def __init__(self, cfg: PipelineConfig) -> None:
        from ccpipe.steps.langid import LanguageId
        from ccpipe.steps.perplexity import Perplexity
        from ccpipe.steps.quality import GopherQuality
        from ccpipe.steps.quality_score import QualityScore
        from ccpipe.steps.ref_classifier import RefClassifier

        self.cfg = cfg
        self.lid = LanguageId(model=cfg.langid.model, threshold=cfg.langid.threshold, max_chars=cfg.langid.max_chars)
        self.perplexity = Perplexity.from_config(cfg.perplexity)
        self.ref = RefClassifier.from_config(cfg.ref)
        self.gopher = GopherQuality(cfg.quality.rules(), cfg.quality.skip_languages)
        self.quality = QualityScore.from_config(cfg.quality_score)
        for step in (self.lid, self.perplexity, self.ref, self.quality):
            if step is not None:
                step.check()  # a missing or corrupt model fails here, naming the file
                step.prepare(None)  # type: ignore[arg-type]

    def annotate(self, text: str, i: int = 0) -> dict[str, Any]:
        doc = _doc(text, i)
        doc.language, doc.language_score = self.lid.predict(text)
        if self.perplexity is not None:
            s = self.perplexity.scorer(doc.language)
            doc.extras["perplexity"] = s.perplexity(text) if s is not None else -1.0
        if self.ref is not None:
            doc.extras["ref_score"] = round(self.ref.score(text), 4)
        skip = doc.language in self.gopher.skip_languages
        gopher = None if skip else self.gopher.check_document(text, doc.language)
        row = {"language": doc.language, "language_score": doc.language_score, "length": len(text),
               "gopher": "skipped_language" if skip else (gopher or "pass"), **doc.extras}
        if self.quality is not None:
            row["quality_score"] = round(self.quality.score(doc), 4)
        return row


def _column(rows: list[dict[str, Any]], key: str, transform: Callable[[float], float] = float) -> np.ndarray:
    vals = []
    for r in rows:
        v = r.get(key)
        vals.append(math.nan if v is None else transform(v))
    return np.array(vals, np.float64)


def signals_of(rows: list[dict[str, Any]], cfg: PipelineConfig) -> list[Signal]:
    """The signal columns present in ``rows`` with the config's thresholds."""
    out = [Signal("length", _column(rows, "length"))]
    if any("language_score" in r for r in rows):
        v = _column(rows, "language_score")
        out.append(Signal("language_score", v, v < cfg.langid.threshold, f"< {cfg.langid.threshold} (langid)"))
    if any("perplexity" in r for r in rows):
        # lower perplexity = better; -1 means "no model for the language": left out
        out.append(Signal("-perplexity", _column(rows, "perplexity", lambda p: -p if p > 0 else math.nan)))
    if any("ref_score" in r for r in rows):
        v = _column(rows, "ref_score")
        note = "" if cfg.ref.drop else " (off)"
        out.append(Signal("ref_score", v, v < cfg.ref.threshold, f"< {cfg.ref.threshold}{note}"))
    if any("gopher" in r for r in rows):
        verdict = [r.get("gopher") for r in rows]
        v = np.array([math.nan if g in (None, "skipped_language") else float(g == "pass") for g in verdict])
        note = "" if cfg.quality.enabled else " (off)"
        out.append(Signal("gopher_pass", v, v == 0.0, f"fails a Gopher rule{note}"))
    if any("line_dedup_kept" in r for r in rows):
        out.append(Signal("line_dedup_kept", _column(rows, "line_dedup_kept")))
    if any("quality_score" in r for r in rows):
        v = _column(rows, "quality_score")
        t = cfg.quality_score.drop_below
        out.append(Signal("quality_score", v, v < t, f"< {t}" + ("" if t > 0 else " (off)")))
    return out


def _fitted_on(fit: dict[str, Any], label_path: str | Path) -> bool:
    """Whether a model's weights were fitted on this label file: the same content (its
    SHA-256, recorded since the fit reports it), else the same path."""
    from ccpipe.models.quality import labels_digest

    if fit.get("labels_sha256"):
        return fit["labels_sha256"] == labels_digest(label_path)
    return Path(fit.get("labels", "")).resolve() == Path(label_path).resolve()


def eval_texts(label_path: str | Path, cfg: PipelineConfig, bootstrap: int = 1000) -> dict[str, Any]:
    labelled = read_labels(label_path, "text")
    scorer = TextScorer(cfg)
    rows = [scorer.annotate(r["text"], i) for i, r in enumerate(labelled)]
    y = np.array([r["label"] for r in labelled])
    result = {"labels": str(label_path), "n": len(y), "n_good": int(y.sum()),
              "languages": _count(r["language"] for r in rows),
              "signals": evaluate_signals(signals_of(rows, cfg), y, bootstrap=bootstrap)}
    if scorer.quality is not None:
        fit = scorer.quality._model.info.get("fit")
        if isinstance(fit, dict) and _fitted_on(fit, label_path):
            cv = {r["mode"]: r["roc_auc_mean"] for r in fit.get("cross_validated", [])}
            result["note"] = (f"quality_score's weights were fitted on this file ({fit['weights']} weights): its AUC "
                              f"here is in-sample; cross-validated: {cv.get(fit['weights'])}")
    return result


def eval_run(label_path: str | Path, run_dir: str | Path, cfg: PipelineConfig, bootstrap: int = 1000) -> dict[str, Any]:
    """Labels by id against a finished run's rows: the signals of the kept documents,
    and the run's own drops (a labelled id missing from the run counts as dropped)."""
    from ccpipe.io.dataset import read_rows, shard_files

    labelled = read_labels(label_path, "id")
    if not shard_files(run_dir):
        raise InputError(f"no rows under {run_dir}: is it the output directory of a finished `ccpipe run`?")
    cols = ["id", "length", "original_length", "language", "language_score", "perplexity", "ref_score",
            "quality_score"]
    table = read_rows(run_dir, cols).to_pylist()
    by_id = {r["id"]: r for r in table}
    y_all = np.array([r["label"] for r in labelled])
    in_run = np.array([r["id"] in by_id for r in labelled])
    rows = []
    for r in labelled:
        row = dict(by_id.get(r["id"]) or {})
        if row and row.get("original_length"):
            row["line_dedup_kept"] = row["length"] / row["original_length"]
        rows.append(row)
    kept_rows = [row for row, k in zip(rows, in_run) if k]
    result: dict[str, Any] = {"labels": str(label_path), "run": str(run_dir), "n": len(y_all),
                              "n_good": int(y_all.sum()), "in_run": int(in_run.sum()),
                              "run_drops": {"threshold": "the run's steps", **drop_figures(~in_run, y_all)}}
    y = y_all[in_run]
    if len(kept_rows) and 0 < y.sum() < len(y):
        result["signals"] = evaluate_signals(signals_of(kept_rows, cfg), y, bootstrap=bootstrap)
    else:
        result["signals"] = []
        log.warning("fewer than two classes among the labelled documents kept by the run: no ROC AUC")
    return result


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values).most_common())


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{result['n']} labelled pages ({result['n_good']} good)"
             + (f", {result['in_run']} of them in the run" if "in_run" in result else "")]
    if "languages" in result:
        lines.append("languages: " + ", ".join(f"{k} {v}" for k, v in list(result["languages"].items())[:8]))
    head = f"{'signal':<16}{'n':>5}  {'ROC AUC':>7}  {'95% CI':<15} {'drop threshold':<26}{'dropped':>8}" \
           f"{'drop prec':>10}{'drop rec':>9}{'good kept':>10}"
    lines += [head, "-" * len(head)]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    rows = list(result["signals"])
    if "run_drops" in result:
        rows.append({"signal": "kept by run", "n": result["n"], "roc_auc": None, "ci95": None, **result["run_drops"]})
    for r in rows:
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r.get("ci95") else "-"
        line = f"{r['signal']:<16}{r['n']:>5}  {fmt(r.get('roc_auc')):>7}  {ci:<15} "
        if "dropped" in r:
            line += (f"{r['threshold']:<26}{r['dropped']:>8}{fmt(r['drop_precision']):>10}"
                     f"{fmt(r['drop_recall']):>9}{fmt(r['good_kept']):>10}")
        lines.append(line.rstrip())
    if result.get("note"):
        lines.append("note: " + result["note"])
    return "\n".join(lines)


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", required=True)
    q = sub.add_parser("quality", help="ROC AUC and drop precision/recall of the quality signals against labels")
    q.add_argument("labels", help='JSONL: {"text": ..., "label": 0|1} (or {"id": ..., "label": ...} with --run)')
    q.add_argument("--run", help="a finished run's output directory: look the labelled ids up in its rows")
    q.add_argument("-c", "--config", help="YAML config whose models and thresholds to use (default: the defaults)")
    q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set quality_score.drop_below=0.5 (repeatable)")
    q.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the interval (0 = none)")
    q.add_argument("--json", help="also write the result as JSON here")


@command("eval", _args)
def _eval(args: argparse.Namespace) -> int:
    """Measure quality signals against labels (ccpipe eval quality LABELS.jsonl)."""
    from ccpipe.config import load_config, parse_override

    cfg = load_config(args.config, dict(parse_override(s) for s in args.set))
    if args.run:
        result = eval_run(args.labels, args.run, cfg, args.bootstrap)
    else:
        result = eval_texts(args.labels, cfg, args.bootstrap)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
