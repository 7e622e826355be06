"""Gopher rules: each on a document that trips it and on one that does not."""

from __future__ import annotations

import dataclasses

import pytest

from ccpipe.document import Document
from ccpipe.stats import Stats
from ccpipe.steps.base import TaskContext
from ccpipe.steps.quality import GopherQuality, GopherRules, STOP_WORDS_EN, ngram_char_ratios
from tests.conftest import data_path

GOOD = (
    "The river town grew slowly around the old mill, and by the end of the century it had a school, "
    "two churches and a small library that opened every morning. Farmers brought wheat to the market "
    "on Saturdays, while traders from the coast came with salt, cloth and news. Most families lived "
    "in stone houses built with material taken from the quarry near the northern hills. When the "
    "railway arrived, younger people left to find work in larger cities, yet many returned later "
    "to raise their children in quieter streets. Today visitors walk along the restored canal, "
    "read about local history in the museum and have lunch in cafes facing the water."
)
LINES = [s.strip() + "." for s in GOOD.split(".") if s.strip()]  # 6 sentences as lines
NO_STOP = " ".join(w for w in GOOD.split() if w.lower().strip(".,") not in STOP_WORDS_EN)
REPEAT = "quiet harbour lanterns glimmered beside weathered fishing boats waiting patiently for dawn tides"


def _variants():
    # (rule, document, language, rule overrides): the document breaks exactly this rule
    long_line = " ".join(GOOD.split()[:45])
    return [
        ("gopher_too_few_words", " ".join(GOOD.split()[:40]), "en", {}),
        ("gopher_too_many_words", GOOD, "en", {"max_words": 60}),
        ("gopher_mean_word_length", " ".join(["ab", "cd", "to", "the"] * 20), "en", {}),
        ("gopher_symbol_word_ratio", GOOD + " #tag" * 20, "en", {}),
        ("gopher_bullet_lines", "\n".join("\u2022 " + ln for ln in LINES), "en", {}),
        ("gopher_ellipsis_lines", "\n".join(ln[:-1] + "..." if i < 2 else ln for i, ln in enumerate(LINES)), "en", {}),
        ("gopher_alpha_words", GOOD + " 1234" * 30, "en", {}),
        ("gopher_stop_words", NO_STOP, "en", {}),
        ("gopher_dup_lines", "\n".join(LINES + LINES[:3]), "en", {}),
        ("gopher_dup_line_chars", "\n".join([long_line, *LINES[3:], long_line]), "en", {}),
        ("gopher_dup_paragraphs", "\n\n".join(LINES + LINES[:3]), "en", {"max_dup_lines_ratio": 1.0, "max_dup_line_chars_ratio": 1.0}),
        ("gopher_dup_paragraph_chars", "\n\n".join([long_line, *LINES[3:], long_line]), "en",
         {"max_dup_lines_ratio": 1.0, "max_dup_line_chars_ratio": 1.0}),
        ("gopher_top_2gram", GOOD + " big cat" * 30, "en", {}),
        ("gopher_top_3gram", GOOD + " big cat tree" * 20, "en", {"max_top_ngram_chars_ratio": {2: 1.0, 3: 0.18, 4: 0.16}}),
        ("gopher_dup_5gram", GOOD + " " + REPEAT + " and then " + REPEAT, "en", {}),
        ("gopher_dup_10gram", GOOD + " " + REPEAT + " and then " + REPEAT, "en",
         {"max_dup_ngram_chars_ratio": {n: (1.0 if n < 10 else 0.1) for n in range(5, 11)}}),
    ]


def test_clean_prose_passes_every_rule():
    assert GopherQuality().check_document(GOOD, "en") is None
    assert GopherQuality().check_document("\n".join(LINES), "en") is None


@pytest.mark.parametrize("rule,text,lang,overrides", _variants(), ids=[v[0] for v in _variants()])
def test_rule_trips_and_clean_text_passes_under_same_rules(rule, text, lang, overrides):
    q = GopherQuality(dataclasses.replace(GopherRules(), **overrides))
    assert q.check_document(text, lang) == rule
    clean = " ".join(GOOD.split()[:55]) if rule == "gopher_too_many_words" else GOOD
    assert q.check_document(clean, lang) is None
    assert q.check_document("\n\n".join(LINES), lang) is None or rule == "gopher_too_many_words"


def test_stop_word_rule_is_english_only():
    assert GopherQuality().check_document(NO_STOP, "en") == "gopher_stop_words"
    assert GopherQuality().check_document(NO_STOP, "fr") is None


def test_ngram_ratios_by_hand():
    r = ngram_char_ratios("a b a b".split(), [2], [3])
    # bigram "a b" occurs twice, 2 chars each, of 4 word chars; trigrams "a b a", "b a b" are unique
    assert r == {"top_2": 1.0}
    r = ngram_char_ratios("xx y xx y zzzz".split(), [2], [2])
    assert r["top_2"] == pytest.approx(2 * 3 / 10)
    assert r["dup_2"] == pytest.approx(6 / 10)  # words 0..3 are covered, "zzzz" is not


def _ratios_brute_force(words, top_ns, dup_ns):
    from collections import Counter

    out, total = {}, sum(map(len, words))
    for n in top_ns:
        c = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        best = max(c.values(), default=0)
        if best > 1:  # ties: the most frequent n-gram covering most characters
            out[f"top_{n}"] = max(best * sum(map(len, g)) for g, v in c.items() if v == best) / total
    for n in dup_ns:
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        c, cov = Counter(grams), [False] * len(words)
        for i, g in enumerate(grams):
            if c[g] > 1:
                cov[i : i + n] = [True] * n
        if any(cov):
            out[f"dup_{n}"] = sum(len(w) for w, v in zip(words, cov) if v) / total
    return out


def test_ngram_ratios_match_brute_force_on_real_pages():
    from ccpipe.io.wet import read_wet

    docs = list(read_wet(str(data_path("wet", "CC-MAIN-2017-30-00008.excerpt.warc.wet.gz")), Stats()))[:60]
    docs.append(Document(id="tie", url="u", date_download="", digest="", title="", raw_content="a b a b cc dd cc dd e"))
    checked = 0
    for d in docs:
        words = d.raw_content.lower().split()
        if len(words) < 10:
            continue
        got = ngram_char_ratios(words, [2, 3, 4], range(5, 11))
        want = _ratios_brute_force(words, [2, 3, 4], range(5, 11))
        assert got.keys() == want.keys(), d.id
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-12), (d.id, k)
        # with a floor, every ratio above it is still exact (the filter's decisions hold)
        floored = ngram_char_ratios(words, [2, 3, 4], range(5, 11), dup_floor=0.1)
        for k in want:
            if want[k] > 0.1 or k.startswith("top_"):
                assert floored[k] == pytest.approx(want[k], abs=1e-12), (d.id, k)
        checked += 1
    assert checked >= 40
    # "a b" and "cc dd" both occur twice: the top bigram is the one with more characters
    assert ngram_char_ratios("a b a b cc dd cc dd e".split(), [2], [])["top_2"] == pytest.approx(2 * 4 / 13)


def test_alpha_word_count_is_the_regex_count():
    import re

    from ccpipe.io.wet import read_wet
    from ccpipe.steps.quality import count_alpha_words

    regex = re.compile(r"\S*[^\W\d_]\S*")
    texts = [d.raw_content for d in read_wet(str(data_path("wet", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")), Stats())][:40]
    texts += ["abc 123 -- __ ab_1 1a a1 ... \u00e9 12\u00e9 \u00bd \u00b2, x\u00a0y 42\u2003z\u3000\u6f22\u5b57 \u0661\u0662",
              "", "   ", "42 \U0001F600 emoji \U0001D400x", "lone \ud800 surrogate 7\udfff"]
    for t in texts:
        assert count_alpha_words(t) == len(regex.findall(t)), t[:80]


def test_step_counts_each_rule_and_skips_languages(tmp_path):
    docs = [
        Document(id="ok", url="u", date_download="", digest="", title="", raw_content=GOOD, language="en"),
        Document(id="short", url="u", date_download="", digest="", title="", raw_content="too short", language="en"),
        Document(id="zh", url="u", date_download="", digest="", title="", raw_content="中文网页内容", language="zh"),
        Document(id="dup", url="u", date_download="", digest="", title="", raw_content="\n".join(LINES + LINES), language="de"),
    ]
    ctx = TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())
    out = list(GopherQuality(skip_languages=["zh"]).run(docs, ctx))
    assert [d.id for d in out] == ["ok", "zh"]
    st = ctx.stats.step("quality")
    assert dict(st.dropped) == {"gopher_too_few_words": 1, "gopher_dup_lines": 1}
    assert st.counters["skipped_language"] == 1


@pytest.mark.parametrize("rule,text,lang,overrides", _variants(), ids=[v[0] for v in _variants()])
def test_measure_gives_the_value_that_broke_the_rule(rule, text, lang, overrides):
    """What a dropped document's audit shows: the measured value is past the stated limit."""
    q = GopherQuality(dataclasses.replace(GopherRules(), **overrides))
    value, limit = q.measure(text, lang, rule)
    op, _, bound = limit.partition(" ")
    if op == "outside":
        lo, hi = (float(x) for x in bound.strip("[]").split(","))
        assert not lo <= value <= hi
    else:
        assert (value > float(bound)) if op == ">" else (value < float(bound)), (value, limit)
    # the same rule measured on clean prose is within its limit
    clean = " ".join(GOOD.split()[:55]) if rule == "gopher_too_many_words" else GOOD
    v2, _ = q.measure(clean, lang, rule)
    assert v2 != value
