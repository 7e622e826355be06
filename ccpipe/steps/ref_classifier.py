"""LLaMA's is-reference classifier: P(page looks like a Wikipedia reference).

A fastText linear classifier (labels ``__label__ref`` / ``__label__web``) scores
each document; the score lands in ``ref_score``. With ``drop`` set, documents
scoring below ``threshold`` (RedPajama's 0.25) are dropped with reason
``below_threshold``. Training: ``ccpipe models train-ref`` (ccpipe.models.ref).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.models import check_file, ref_model_path
from ccpipe.steps.base import Step, TaskContext
from ccpipe.steps.langid import load_fasttext

log = logging.getLogger(__name__)

POSITIVE = "__label__ref"
NEGATIVE = "__label__web"
TRAIN_HINT = "train one with `ccpipe models train-ref` or `ccpipe models build-defaults`"


def classifier_text(text: str, max_chars: int = 5000) -> str:
    """What the classifier sees, in training and in the pipeline: one lowercased line."""
    if max_chars and len(text) > max_chars:
        text = text[:max_chars]
    return " ".join(text.lower().split())  # = re.sub(r"\s+", " ", ...).strip(), 5x faster


class RefClassifier(Step):
    """Write ``ref_score`` = P(reference); optionally drop documents below ``threshold``."""

    name = "ref_classifier"
    output_fields = {"ref_score": pa.float32()}

    def __init__(self, model: str | Path | None = None, threshold: float = 0.25, drop: bool = False,
                 max_chars: int = 5000) -> None:
        self.model_path = Path(model).expanduser() if model else None
        self.threshold = threshold
        self.drop_below = drop
        self.max_chars = max_chars
        self._model = None

    def _unloaded(self):
        return {"_model": None}

    @classmethod
    def from_config(cls, cfg) -> "RefClassifier | None":
        """The step for a ``RefConfig``; ``None`` when disabled or ``auto`` without a model."""
        if cfg.enabled is False:
            return None
        step = cls(cfg.model, cfg.threshold, cfg.drop, cfg.max_chars)
        if cfg.enabled == "auto" and not step.path.exists():
            log.warning("is-reference classifier %s not found, step skipped (%s)", step.path, TRAIN_HINT)
            return None
        return step

    @property
    def path(self) -> Path:
        return self.model_path or ref_model_path()

    def check(self) -> None:
        check_file(self.path, "is-reference classifier", TRAIN_HINT)
        model = load_fasttext(self.path)
        if POSITIVE not in model.get_labels():
            raise ModelError(f"is-reference classifier {self.path} has no {POSITIVE} label; {TRAIN_HINT}")

    def prepare(self, ctx: TaskContext) -> None:
        if self._model is None:
            self._model = load_fasttext(self.path)

    def score(self, text: str) -> float:
        return score_texts(self._model, [text], self.max_chars)[0]

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        dropped = ctx.stats.step(self.name).dropped
        for doc in docs:
            s = self.score(doc.raw_content)
            doc.extras["ref_score"] = round(s, 4)
            if self.drop_below and s < self.threshold:
                dropped["below_threshold"] += 1
                continue
            yield doc


def score_texts(model, texts: list[str], max_chars: int = 5000) -> list[float]:
    """P(``__label__ref``) for each text under a two-label fastText model."""
    labels, probs = model.predict([classifier_text(t, max_chars) for t in texts], k=2)
    out = []
    for ls, ps in zip(labels, probs):
        d = dict(zip(ls, ps))
        if POSITIVE in d:
            out.append(float(min(d[POSITIVE], 1.0)))
        else:
            out.append(float(max(0.0, 1.0 - d.get(NEGATIVE, 1.0))))
    return out
