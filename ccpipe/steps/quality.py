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
  a polynomial over word hashes in numpy, so the cost is a few array passes.
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
_BMP_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _bmp_tables() -> tuple[np.ndarray, np.ndarray]:
    """(is whitespace, is letter) for every BMP code point, by ``re``'s own ``\\s`` and
    ``[^\\W\\d_]``, so the vectorised count below is the regex's count by construction."""
    global _BMP_TABLES
    if _BMP_TABLES is None:
        chars = "".join(map(chr, range(0x10000)))  # one regex scan each: ~20 ms, not ~0.3 s of matches per character
        tables = []
        for pattern in (r"\s", r"[^\W\d_]"):
            t = np.zeros(0x10000, bool)
            t[[m.start() for m in re.finditer(pattern, chars)]] = True
            tables.append(t)
        _BMP_TABLES = (tables[0], tables[1])
    return _BMP_TABLES


def count_alpha_words(text: str) -> int:
    """Whitespace-separated words holding at least one letter (``len(_ALPHA_WORD_RE.findall)``).

    Vectorised over the code points (the regex cost ~0.4 ms on a 6 kB page); text with
    characters outside the BMP takes the regex.
    """
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)  # a lone surrogate is no letter
    if cp.size == 0:
        return 0
    if int(cp.max()) >= 0x10000:
        return len(_ALPHA_WORD_RE.findall(text))
    return count_alpha_words_bmp(cp)


def count_alpha_words_bmp(cp: np.ndarray) -> int:
    """:func:`count_alpha_words` of an array of code points below U+10000."""
    space_t, letter_t = _bmp_tables()
    space = space_t[cp]
    start = ~space
    start[1:] &= space[:-1]  # first character of each word
    starts = np.flatnonzero(start)
    if starts.size == 0:
        return 0
    # letters per word (a word runs from its first character to the next word's)
    return int(np.count_nonzero(np.add.reduceat(letter_t[cp].view(np.uint8), starts)))


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


def ngram_char_ratios(words: list[str], top_ns: Iterable[int], dup_ns: Iterable[int],
                      dup_floor: float | None = None) -> dict[str, float]:
    """``top_<n>`` and ``dup_<n>`` character ratios of a word list (see the module doc).

    Ratios that are zero are left out. Repeated (n+1)-grams lie inside repeated n-grams,
    so ``dup_<n>`` never grows with n: once one is at or below ``dup_floor`` the larger
    n are not computed (the filter passes the floor = its smallest limit), and once no
    n-gram repeats, no longer one does.

    Words become 64-bit ids with Python's (C) string hash, n-grams a polynomial of ids;
    one argsort per n finds equal n-grams. When several n-grams share the top count, the
    one covering most characters sets ``top_<n>`` (so the figure does not depend on the
    hash order).
    """
    top_ns, dup_ns = set(top_ns), set(dup_ns)
    out: dict[str, float] = {}
    n_words = len(words)
    if n_words == 0:
        return out
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    total = int(lens.sum())
    cum = np.zeros(n_words + 1, np.int64)  # cum[i] = characters in words[:i]
    np.cumsum(lens, out=cum[1:])
    max_n = max([*top_ns, *dup_ns, 1])
    h = ids
    with np.errstate(over="ignore"):
        for n in range(2, max_n + 1):
            if n > n_words:
                break
            h = h[:-1] * _P + ids[n - 1 :]  # hash of words[i : i + n], uint64 wrap-around
            if n not in top_ns and n not in dup_ns:
                continue
            m = h.size
            order = np.argsort(h)
            hs = h[order]
            eq = hs[1:] == hs[:-1]  # sorted neighbours equal: a repeated n-gram
            if not eq.any():
                break  # nothing repeats at n, so nothing repeats at n + 1 either
            if n in top_ns:
                starts = np.flatnonzero(np.concatenate(([True], ~eq)))  # runs of equal n-grams
                counts = np.diff(np.append(starts, m))
                best = counts.max()
                first = order[starts[counts == best]]  # a position of each most frequent n-gram
                out[f"top_{n}"] = float(best * (cum[first + n] - cum[first]).max() / total)
            if n in dup_ns:
                dup_sorted = np.zeros(m, bool)
                dup_sorted[1:] |= eq
                dup_sorted[:-1] |= eq
                dup = np.zeros(n_words, np.int64)
                dup[order] = dup_sorted  # dup[i]: the n-gram starting at word i repeats
                c = np.zeros(n_words + 1, np.int64)
                np.cumsum(dup, out=c[1:])
                i = np.arange(n_words)
                covered = c[i + 1] - c[np.maximum(i - n + 1, 0)] > 0  # inside some repeated n-gram
                out[f"dup_{n}"] = ratio = float(lens[covered].sum() / total)
                if dup_floor is not None and ratio <= dup_floor:
                    dup_ns = {k for k in dup_ns if k < n}  # the rest are <= ratio
                    if n >= max(top_ns, default=0):
                        break
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
        for rule, _, _, broken in self._checks(text, language):
            if broken:
                return rule
        return None

    def measure(self, text: str, language: str | None, rule: str) -> tuple[float, str] | None:
        """What rule ``rule`` measures on ``text`` and its limit (``"> 0.3"``), for audits of
        a dropped document; None if the rule is not reached (an earlier one breaks first)."""
        for name, value, limit, _ in self._checks(text, language):
            if name == rule:
                return value, limit
        return None

    def _checks(self, text: str, language: str | None) -> Iterator[tuple[str, float, str, bool]]:
        """(rule, measured value, its limit, broken) for each rule in order, lazily: the
        costly repetition rules are measured only when the earlier ones pass."""
        r = self.rules
        words = text.split()
        n_words = len(words)
        yield "gopher_too_few_words", n_words, f"< {r.min_words}", n_words < r.min_words
        yield "gopher_too_many_words", n_words, f"> {r.max_words}", n_words > r.max_words
        word_chars = sum(map(len, words))
        mean_len = word_chars / n_words
        yield ("gopher_mean_word_length", mean_len, f"outside [{r.min_mean_word_length}, {r.max_mean_word_length}]",
               not r.min_mean_word_length <= mean_len <= r.max_mean_word_length)
        symbols = text.count("#") + text.count("...") + text.count("\u2026")
        yield "gopher_symbol_word_ratio", symbols / n_words, f"> {r.max_symbol_word_ratio}", symbols / n_words > r.max_symbol_word_ratio
        all_lines = text.split("\n")
        lines = [ln for ln in all_lines if ln.strip()]
        if lines:
            bullets = sum(1 for ln in lines if ln.lstrip().startswith(BULLETS)) / len(lines)
            yield "gopher_bullet_lines", bullets, f"> {r.max_bullet_lines_ratio}", bullets > r.max_bullet_lines_ratio
            ellipsis = sum(1 for ln in lines if ln.rstrip().endswith(("...", "\u2026"))) / len(lines)
            yield "gopher_ellipsis_lines", ellipsis, f"> {r.max_ellipsis_lines_ratio}", ellipsis > r.max_ellipsis_lines_ratio
        alpha = count_alpha_words(text) / n_words
        yield "gopher_alpha_words", alpha, f"< {r.min_alpha_words_ratio}", alpha < r.min_alpha_words_ratio
        lower_words = text.lower().split()
        if language == "en" and r.min_stop_words:
            stop = len(STOP_WORDS_EN.intersection(lower_words))
            yield "gopher_stop_words", stop, f"< {r.min_stop_words}", stop < r.min_stop_words
        # repetition
        dup, dup_chars = _dup_ratios(all_lines)
        yield "gopher_dup_lines", dup, f"> {r.max_dup_lines_ratio}", dup > r.max_dup_lines_ratio
        yield "gopher_dup_line_chars", dup_chars, f"> {r.max_dup_line_chars_ratio}", dup_chars > r.max_dup_line_chars_ratio
        dup, dup_chars = _dup_ratios(re.split(r"\n\s*\n", text))
        yield "gopher_dup_paragraphs", dup, f"> {r.max_dup_paragraphs_ratio}", dup > r.max_dup_paragraphs_ratio
        yield ("gopher_dup_paragraph_chars", dup_chars, f"> {r.max_dup_paragraph_chars_ratio}",
               dup_chars > r.max_dup_paragraph_chars_ratio)
        dup_limits = r.max_dup_ngram_chars_ratio
        ratios = ngram_char_ratios(lower_words, r.max_top_ngram_chars_ratio, dup_limits,
                                   dup_floor=min(dup_limits.values()) if dup_limits else None)
        for n, limit in sorted(r.max_top_ngram_chars_ratio.items()):
            v = ratios.get(f"top_{n}", 0.0)
            yield f"gopher_top_{n}gram", v, f"> {limit}", v > limit
        for n, limit in sorted(r.max_dup_ngram_chars_ratio.items()):
            v = ratios.get(f"dup_{n}", 0.0)
            yield f"gopher_dup_{n}gram", v, f"> {limit}", v > limit

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
