"""CCNet's normalisation and line keys, against values worked out by hand."""

import hashlib

import numpy as np

from ccpipe.text import line_hash, line_hashes, normalize_for_dedup, normalize_for_lm, normalize_lines_for_dedup


def test_dedup_normalisation_by_hand():
    # strip, lowercase, every digit -> 0, Unicode punctuation and control chars deleted,
    # ASCII punctuation and accents kept
    assert normalize_for_dedup("  Hello, World 2024 — «test»\x01 ") == "hello, world 0000  test"
    assert normalize_for_dedup("Café №٣ Straße!") == "café №0 straße!"  # Arabic-Indic digit too
    # full-width "１" is in the punctuation set, but digits are folded first, so it stays as 0
    assert normalize_for_dedup("Ｘ１２") == "ｘ00"
    assert normalize_for_dedup("\t\r\n") == ""
    # strip happens before control characters are removed (" abc" keeps its space)
    assert normalize_for_dedup(" \x01 abc") == " abc"


def test_lm_normalisation_by_hand():
    assert normalize_for_lm("Élan 12€ «x»—y") == 'elan 00€ "x" - y'
    assert normalize_for_lm("Ｈéllo，World！") == "ｈello,world!"


def test_line_hash_is_first_8_bytes_of_sha1_little_endian():
    # sha1("hello, world 0000  test") = 2a1643f52bfb1439...; little-endian uint64 of those 8 bytes
    assert hashlib.sha1(b"hello, world 0000  test").hexdigest().startswith("2a1643f52bfb1439")
    assert line_hash("  Hello, World 2024 — «test» ") == 0x3914FB2BF543162A == 4113188525913085482
    # empty line: sha1("") = da39a3ee5e6b4b0d...
    assert line_hash("   ") == 0x0D4B6B5EEEA339DA


def test_batched_keys_equal_per_line_keys():
    lines = ["A line", " \x01 abc", "ΟΔΟΣ", "İstanbul ١٢٣", "\u3000x\u3000", "A\rB", "", "x\x0by", "Σ\x01"]
    per_line = [line_hash(line) for line in lines]
    assert line_hashes(lines).tolist() == per_line
    assert normalize_lines_for_dedup(lines) == [normalize_for_dedup(x).encode() for x in lines]
    assert line_hashes(lines).dtype == np.uint64


def test_batched_normalisation_equals_per_line_on_real_pages():
    from ccpipe.io.wet import read_wet
    from ccpipe.stats import Stats
    from tests.conftest import data_path

    texts = [d.raw_content for f in ("CC-MAIN-2017-30-00008.excerpt.warc.wet.gz", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")
             for d in read_wet(str(data_path("wet", f)), Stats())]
    texts.append("x\uff11\uff15y \u0661\u0662 \u2014 \u201cq\u201d a\x9fb\x85 c\x07d \U0001d7ce 9\u00b2 \u2026")
    for text in texts:
        lines = text.split("\n")
        assert normalize_lines_for_dedup(lines) == [normalize_for_dedup(x).encode() for x in lines]

