"""Gopher's heuristic quality and repetition filters (Rae et al. 2021, appendix A).

Each rule has its own drop reason (``gopher_<rule>``) and threshold, all set in
the ``quality`` config section. Words are whitespace-separated tokens, so the
word-based rules only make sense for languages written with spaces: by default
the filter skips documents in ``skip_languages`` (Chinese, Japanese, Thai, ...).
The stop-word rule is English-only, as in the paper.

Repetition rules (checked last, they cost most):
* duplicate lines / paragraphs: share of lines (paragraphs) that repeat an
  earlier one, and share of characters in them;
* top n-gram (n = 2, 3, 4): characters covered by the most frequent word n-gram
  (count x its characters), over all word characters;
* duplicate n-grams (n = 5..10): share of word characters inside any n-gram
  that occurs more than once (each word counted once). N-grams are hashed with
  a polynomial over word ids in numpy, so the cost is a few array passes.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import numpy as np

from ccpipe.config import GopherRules  # noqa: F401 - the step's thresholds live with the config
from ccpipe.document import Document
from ccpipe.steps.base import Step, TaskContext

STOP_WORDS_EN = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("\u2022", "\u25cf", "\u25aa", "\u25e6", "\u2023", "\u2043", "\u00b7", "-", "*", "\u2013")
_ALPHA_WORD_RE = re.compile(r"\S*[^\W\d_]\S*")
_P = np.uint64(0x9E3779B97F4A7C15)


def _dup_ratios(parts: list[str]) -> tuple[float, float]:
    """Share of non-empty parts that repeat an earlier one, and of their characters."""
    seen: set[str] = set()
    n = dup = chars = dup_chars = 0
    for p in parts:
        p = p.strip()
        if not p:
            continue
        n += 1
        chars += len(p)
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    return (dup / n, dup_chars / chars) if n and chars else (0.0, 0.0)


def ngram_char_ratios(words: list[str], top_ns: Iterable[int], dup_ns: Iterable[int]) -> dict[str, float]:
    """``top_<n>`` and ``dup_<n>`` character ratios of a word list (see the module doc)."""
    top_ns, dup_ns = sorted(top_ns), sorted(dup_ns)
    out: dict[str, float] = {}
    n_words = len(words)
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.uint64, count=n_words)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    total = int(lens.sum())
    cum = np.concatenate(([0], np.cumsum(lens)))
    max_n = max([*top_ns, *dup_ns, 1])
    h = ids.copy()
    with np.errstate(over="ignore"):
        for n in range(2, max_n + 1):
            if n > n_words:
                break
            h = h[:-1] * _P + ids[n - 1 :]  # hash of words[i : i + n], uint64 wrap-around
            if n not in top_ns and n not in dup_ns:
                continue
            _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True, return_counts=True)
            if n in top_ns:
                j = int(np.argmax(counts))
                if counts[j] > 1:
                    i0 = int(first[j])
                    out[f"top_{n}"] = float(counts[j] * (cum[i0 + n] - cum[i0]) / total)
            if n in dup_ns:
                starts = np.flatnonzero(counts[inverse] > 1)
                if starts.size:
                    cover = np.zeros(n_words + 1, dtype=np.int64)
                    np.add.at(cover, starts, 1)
                    np.add.at(cover, starts + n, -1)
                    covered = np.cumsum(cover[:n_words]) > 0
                    out[f"dup_{n}"] = float(lens[covered].sum() / total)
    return out


class GopherQuality(Step):
    """Drop documents that break a Gopher quality or repetition rule; the rule is the reason."""

    name = "quality"

    def __init__(self, rules: GopherRules | None = None, skip_languages: list[str] | None = None) -> None:
        self.rules = rules or GopherRules()
        self.skip_languages = frozenset(skip_languages or ())

    @classmethod
    def from_config(cls, cfg) -> "GopherQuality | None":
        return cls(cfg.rules(), cfg.skip_languages) if cfg.enabled else None

    def check_document(self, text: str, language: str | None = None) -> str | None:
        """The first rule ``text`` breaks (``gopher_<rule>``), or ``None`` when it passes."""
        r = self.rules
        words = text.split()
        n_words = len(words)
        if n_words < r.min_words:
            return "gopher_too_few_words"
        if n_words > r.max_words:
            return "gopher_too_many_words"
        word_chars = sum(map(len, words))
        mean_len = word_chars / n_words
        if not r.min_mean_word_length <= mean_len <= r.max_mean_word_length:
            return "gopher_mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("\u2026")
        if symbols / n_words > r.max_symbol_word_ratio:
            return "gopher_symbol_word_ratio"
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines:
            bullets = sum(1 for ln in lines if ln.lstrip().startswith(BULLETS))
            if bullets / len(lines) > r.max_bullet_lines_ratio:
                return "gopher_bullet_lines"
            ellipsis = sum(1 for ln in lines if ln.rstrip().endswith(("...", "\u2026")))
            if ellipsis / len(lines) > r.max_ellipsis_lines_ratio:
                return "gopher_ellipsis_lines"
        if len(_ALPHA_WORD_RE.findall(text)) / n_words < r.min_alpha_words_ratio:
            return "gopher_alpha_words"
        lower = text.lower()
        if language == "en" and r.min_stop_words and len(STOP_WORDS_EN.intersection(lower.split())) < r.min_stop_words:
            return "gopher_stop_words"
        # repetition
        dup, dup_chars = _dup_ratios(text.split("\n"))
        if dup > r.max_dup_lines_ratio:
            return "gopher_dup_lines"
        if dup_chars > r.max_dup_line_chars_ratio:
            return "gopher_dup_line_chars"
        dup, dup_chars = _dup_ratios(re.split(r"\n\s*\n", text))
        if dup > r.max_dup_paragraphs_ratio:
            return "gopher_dup_paragraphs"
        if dup_chars > r.max_dup_paragraph_chars_ratio:
            return "gopher_dup_paragraph_chars"
        ratios = ngram_char_ratios(lower.split(), r.max_top_ngram_chars_ratio, r.max_dup_ngram_chars_ratio)
        for n, limit in sorted(r.max_top_ngram_chars_ratio.items()):
            if ratios.get(f"top_{n}", 0.0) > limit:
                return f"gopher_top_{n}gram"
        for n, limit in sorted(r.max_dup_ngram_chars_ratio.items()):
            if ratios.get(f"dup_{n}", 0.0) > limit:
                return f"gopher_dup_{n}gram"
        return None

    def run(self, docs: Iterable[Document], ctx: TaskContext) -> Iterator[Document]:
        st = ctx.stats.step(self.name)
        for doc in docs:
            if doc.language in self.skip_languages:
                st.counters["skipped_language"] += 1
                yield doc
                continue
            reason = self.check_document(doc.raw_content, doc.language)
            if reason is None:
                yield doc
            else:
                st.dropped[reason] += 1
