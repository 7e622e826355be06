"""``quality_score``: the pipeline's estimate that a page is good language-model training text.

The score combines signals the pipeline already has or gets in a few array passes,
each measured *relative to reference prose of the page's own language*, so that one
set of weights serves every language:

* ``length``: ``ln(1 + characters / chars_per_english_char[language])``; the ratio
  comes from parallel text (the same paragraphs in each language), so a Chinese
  page is not taken for short because Chinese needs fewer characters;
* ``ref``: the logit of the is-reference probability (``ref_score``);
* ``perplexity``: ``ln(perplexity)`` under the language's KenLM model (absent when
  the language has none);
* ``function_words``: share of the page's words (characters, for scripts written
  without spaces) among the 64 most frequent ones of the language's reference prose;
* ``uppercase``: share of upper-case letters among letters;
* ``alpha_words``: share of whitespace-separated words holding a letter (Gopher);
* ``ellipsis_lines``: share of non-empty lines ending in an ellipsis (Gopher).

Each signal becomes ``z = clip((x - center[language]) / scale, -4, 4)``: the centre
is the signal's median on held-out reference prose of that language (the web
sample's median for ``length``), the scale its robust spread over real web pages.
A signal the page lacks (no model for its language, the step off) gives ``z = 0``.
``quality_score = 1 / (1 + exp(-(bias + sum(weight * z))))``, in [0, 1]. Centres,
scales, word lists, character ratios and the weights live in one JSON file built
by ``ccpipe models build-defaults`` (``ccpipe.models.quality``); the bucket plays
no part. With ``drop_below`` > 0 the step drops pages that score lower, counted as
``quality_score/below_threshold``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.models import check_file, quality_model_path
from ccpipe.steps.base import Step, TaskContext
from ccpipe.steps.quality import _bmp_tables, count_alpha_words_bmp

log = logging.getLogger(__name__)

SIGNALS = ("length", "ref", "perplexity", "function_words", "uppercase", "alpha_words", "ellipsis_lines")
SIGNS = {"length": 1, "ref": 1, "perplexity": -1, "function_words": 1, "uppercase": -1, "alpha_words": 1,
         "ellipsis_lines": -1}
"""Which way each signal points (prior knowledge, not fitted): +1 when more is better."""
UNSPACED = frozenset({"zh", "ja", "ko", "th", "lo", "km", "my", "bo"})
"""Scripts written without spaces between words: function "words" are characters."""
Z_CLIP = 4.0
TEXT_WINDOW = 5000
"""Text-shape signals are read from the first 5,000 characters (the is-reference
classifier's window); on the dev labels the whole text gives the same ROC AUC to
0.003, at twice the cost. ``length`` counts every character."""
FIT_HINT = "build it with `ccpipe models build-defaults` or fit one with `ccpipe models fit-quality LABELS.jsonl`"

_UPPER_TABLE: np.ndarray | None = None


def _upper_table() -> np.ndarray:
    """``str.isupper`` of every BMP code point."""
    global _UPPER_TABLE
    if _UPPER_TABLE is None:
        _UPPER_TABLE = np.fromiter((chr(c).isupper() for c in range(0x10000)), bool, 0x10000)
    return _UPPER_TABLE


_CHAR_TABLES: dict[frozenset[str], np.ndarray] = {}


def _char_table(chars: frozenset[str]) -> np.ndarray:
    """Membership of every BMP code point in ``chars`` (characters above U+FFFF never)."""
    t = _CHAR_TABLES.get(chars)
    if t is None:
        t = np.zeros(0x10000, bool)
        t[[ord(c) for c in chars if len(c) == 1 and ord(c) < 0xFFFF]] = True
        _CHAR_TABLES[chars] = t
    return t


def logit(p: float, eps: float = 1e-3) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def text_signals(text: str, function_words: frozenset[str] | None = None, unspaced: bool = False,
                 char_ratio: float = 1.0) -> dict[str, float | None]:
    """The signals read from the text alone (``None`` where the text has nothing to measure),
    all but ``length`` from its first ``TEXT_WINDOW`` characters.

    Letters and spaces are looked up per code point in tables (Gopher's, see
    ``ccpipe.steps.quality``); characters above U+FFFF count as neither.
    """
    out: dict[str, float | None] = {"length": math.log1p(len(text) / char_ratio)}
    text = text[:TEXT_WINDOW]
    words = text.lower().split()  # lower-casing leaves whitespace where it was
    cp = np.minimum(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32), 0xFFFF)
    letters = _bmp_tables()[1][cp]
    n_letters = int(np.count_nonzero(letters))
    out["uppercase"] = int(np.count_nonzero(_upper_table()[cp] & letters)) / n_letters if n_letters else None
    out["alpha_words"] = count_alpha_words_bmp(cp) / len(words) if words else None
    lines = [ln for ln in text.split("\n") if ln and not ln.isspace()]
    if not lines:
        out["ellipsis_lines"] = None
    elif "..." in text or "\u2026" in text:
        out["ellipsis_lines"] = sum(1 for ln in lines if ln.rstrip().endswith(("...", "\u2026"))) / len(lines)
    else:
        out["ellipsis_lines"] = 0.0
    fw: float | None = None
    if function_words:
        if unspaced:
            n_chars = int(np.count_nonzero(~_bmp_tables()[0][cp]))
            fw = int(np.count_nonzero(_char_table(function_words)[cp])) / n_chars if n_chars else None
        elif words:
            fw = sum(map(function_words.__contains__, words)) / len(words)
    out["function_words"] = fw
    return out


def page_signals(text: str, language: str | None, ref_score: float | None, perplexity: float | None,
                 profile: "QualityModel") -> dict[str, float | None]:
    """Every signal of one page, raw (before centring and scaling)."""
    lang = language or ""
    s = text_signals(text, profile.word_set(lang), lang in UNSPACED, profile.char_ratio.get(lang, 1.0))
    s["ref"] = logit(ref_score) if ref_score is not None else None
    s["perplexity"] = math.log(perplexity) if perplexity is not None and perplexity > 0 else None
    return s


@dataclass(kw_only=True)
class QualityModel:
    """Centres, scales and weights of the score (the JSON file, as an object)."""

    center: dict[str, dict[str, float]]
    """language -> signal -> median on that language's held-out reference prose."""
    default_center: dict[str, float]
    """signal -> centre for languages without reference prose."""
    scale: dict[str, float]
    """signal -> robust spread (IQR / 1.349) of the centred signal over real web pages."""
    weights: dict[str, float]
    bias: float
    char_ratio: dict[str, float] = field(default_factory=dict)
    """language -> characters per English character, from parallel text."""
    function_words: dict[str, list[str]] = field(default_factory=dict)
    """language -> the 64 most frequent words (characters) of its reference prose."""
    info: dict[str, Any] = field(default_factory=dict)
    """How it was built and fitted: sources, cross-validated figures (not used to score)."""
    _sets: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)
    _terms: dict[str, list[tuple[str, float, float, float]]] = field(default_factory=dict, init=False, repr=False)

    def word_set(self, lang: str) -> frozenset[str] | None:
        if lang not in self._sets:
            words = self.function_words.get(lang)
            self._sets[lang] = frozenset(words) if words else frozenset()
        return self._sets[lang] or None

    def z(self, signals: dict[str, float | None], language: str | None) -> dict[str, float]:
        """Centred, scaled, clipped signals; 0 for a missing one."""
        center = self.center.get(language or "", {})
        out = {}
        for name in SIGNALS:
            x = signals.get(name)
            c = center.get(name, self.default_center.get(name))
            if x is None or c is None:
                out[name] = 0.0
                continue
            out[name] = min(max((x - c) / self.scale[name], -Z_CLIP), Z_CLIP)
        return out

    def margin(self, z: dict[str, float]) -> float:
        return self.bias + sum(self.weights.get(k, 0.0) * v for k, v in z.items())

    def score(self, signals: dict[str, float | None], language: str | None) -> float:
        """``sigmoid(margin(z(signals)))``, with each language's terms worked out once."""
        terms = self._terms.get(language or "")
        if terms is None:
            center = self.center.get(language or "", {})
            terms = []
            for k in SIGNALS:
                c = center.get(k, self.default_center.get(k))
                if c is not None:
                    w = self.weights.get(k, 0.0)
                    terms.append((k, c, w / self.scale[k], Z_CLIP * abs(w)))  # weight * z, and its bound
            self._terms[language or ""] = terms
        m = self.bias
        for k, c, w_over_s, bound in terms:
            x = signals.get(k)
            if x is not None:
                d = (x - c) * w_over_s
                m += bound if d > bound else (-bound if d < -bound else d)
        return 1.0 / (1.0 + math.exp(-m))

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "signals": list(SIGNALS), "signs": SIGNS, "weights": self.weights, "bias": self.bias,
                "scale": self.scale, "default_center": self.default_center, "center": self.center,
                "char_ratio": self.char_ratio, "function_words": self.function_words, "info": self.info}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "QualityModel":
        check_file(path, "quality-score model", FIT_HINT)
        try:
            d = json.loads(Path(path).read_text())
            m = cls(center=d["center"], default_center=d["default_center"], scale=d["scale"],
                    weights=d["weights"], bias=float(d["bias"]), char_ratio=d.get("char_ratio", {}),
                    function_words=d.get("function_words", {}), info=d.get("info", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"quality-score model {path} is unreadable ({e}); {FIT_HINT}") from e
        missing = [k for k in SIGNALS if k not in m.scale or not m.scale[k] > 0]
        if missing:
            raise ModelError(f"quality-score model {path} has no positive scale for {missing}; {FIT_HINT}")
        return m


class QualityScore(Step):
    """Write ``quality_score`` (see the module doc); drop pages below ``drop_below`` when it is > 0."""

    name = "quality_score"
    output_fields = {"quality_score": pa.float32()}

    def __init__(self, model: str | Path | None = None, drop_below: float = 0.0) -> None:
        self.model_path = Path(model).expanduser() if model else None
        self.drop_below = drop_below
        self._model: QualityModel | None = None

    def _unloaded(self):
        return {"_model": None}

    @classmethod
    def from_config(cls, cfg) -> "QualityScore | None":
        """The step for a ``QualityScoreConfig``; ``None`` when disabled or ``auto`` without a model."""
        if cfg.enabled is False:
            return None
        step = cls(cfg.model, cfg.drop_below)
        if cfg.enabled == "auto" and not step.path.exists():
            log.warning("quality-score model %s not found, step skipped (%s)", step.path, FIT_HINT)
            return None
        return step

    @property
    def path(self) -> Path:
        return self.model_path or quality_model_path()

    def check(self) -> None:
        QualityModel.load(self.path)

    def prepare(self, ctx: TaskContext | None) -> None:
        if self._model is None:
            self._model = QualityModel.load(self.path)

    def score(self, doc: Document) -> float:
        pp = doc.extras.get("perplexity")
        sig = page_signals(doc.raw_content, doc.language, doc.extras.get("ref_score"), pp, self._model)
        return self._model.score(sig, doc.language)

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        dropped = ctx.stats.step(self.name).dropped
        # compare what the column holds (float32), so filtering the column later with
        # ``>= drop_below`` keeps exactly the rows this step kept
        limit = np.float32(self.drop_below)
        for doc in docs:
            s = np.float32(round(self.score(doc), 4))
            doc.extras["quality_score"] = float(s)
            if s < limit:
                dropped["below_threshold"] += 1
                continue
            yield doc
