"""Perplexity: CCNet's formula against a hand-written KenLM model, buckets, cutoffs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.paths import find_binary
from ccpipe.stats import Stats
from ccpipe.steps.base import TaskContext
from ccpipe.steps.perplexity import (
    LMScorer,
    Perplexity,
    bucket_of,
    load_cutoffs,
    normalize_doc_for_lm,
    save_cutoffs,
)
from ccpipe.text import normalize_for_lm

kenlm = pytest.importorskip("kenlm")
spm = pytest.importorskip("sentencepiece")

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# A bigram model written by hand over SentencePiece *word* pieces, so every
# expected score below is a sum of numbers read off this table (log10).
ARPA = """
\\data\\
ngram 1=6
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\t</s>\t0
-0.7\t\u2581the\t-0.2
-0.9\t\u2581cat\t-0.1
-1.1\t\u2581dog\t0

\\2-grams:
-0.2\t<s> \u2581the
-0.3\t\u2581the \u2581cat
-0.4\t\u2581cat </s>

\\end\\
"""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lm")
    corpus = d / "corpus.txt"
    corpus.write_text("the cat\nthe dog\na cat\n" * 20)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(d / "xx"), vocab_size=8, model_type="word",
        hard_vocab_limit=False, minloglevel=2,
    )
    (d / "xx.sp.model").write_bytes((d / "xx.model").read_bytes())
    (d / "xx.arpa").write_text(ARPA)
    return d


@pytest.fixture(scope="module")
def scorer(tiny_models) -> LMScorer:
    return LMScorer(tiny_models / "xx.sp.model", tiny_models / "xx.arpa")


def test_line_scores_by_hand(scorer):
    # <s> the cat </s>: p(the|<s>) + p(cat|the) + p(</s>|cat)
    assert scorer.score_lines(["the cat"]) == pytest.approx((-0.2 - 0.3 - 0.4, 3))
    # <s> cat the </s>: all back off: bo(<s>)+p(cat), bo(cat)+p(the), bo(the)+p(</s>)
    assert scorer.score_lines(["cat the"]) == pytest.approx((-0.3 - 0.9 - 0.1 - 0.7 - 0.2 - 0.5, 3))
    # an unknown word scores as <unk>: bo(<s>)+p(<unk>), p(</s>) with bo(<unk>)=0
    assert scorer.score_lines(["zebra"]) == pytest.approx((-0.3 - 1.0 - 0.5, 2))


def test_document_perplexity_by_hand(scorer):
    # CCNet: normalise (lowercase, accents, digits), score every line, one </s> per line
    text = "The CAT\ncat thé"
    log10 = (-0.2 - 0.3 - 0.4) + (-0.3 - 0.9 - 0.1 - 0.7 - 0.2 - 0.5)
    expected = round(10 ** (-log10 / 6), 1)
    assert scorer.perplexity(text) == expected == 4.0
    assert scorer.perplexity("the cat") == round(10 ** (0.9 / 3), 1) == 2.0


def test_fast_normalisation_matches_per_line():
    text = "Мой отец \u2014\nx\U0001d167y \U00011001\n  Ça coûte 12,50 €\u2026 «oui» \n\tHÉLLO\u0301 wörld \u2014 x\x07y\n\n\u00a0 \x0b \n١٢٣ ＂full\uff11"
    assert normalize_doc_for_lm(text) == [normalize_for_lm(line) for line in text.split("\n")]
    assert normalize_doc_for_lm("Plain ASCII 42") == ["plain ascii 00"]


def test_fast_paths_match_ccnet_formula(scorer):
    """ASCII documents skip the regexes and the piece count skips str.split; both must
    give CCNet's per-line values (normalize_for_lm, len(tokenized.split()) + 1)."""
    texts = ["Plain ASCII 42 with\x07bell\x7f and\ttab\n  second LINE 9 ", "caf\u00e9 \u2014 \u00bd \u3000 x\u2028y 7",
             "the cat sat\n\nthe mat"]
    for text in texts:
        lines = [normalize_for_lm(line) for line in text.split("\n")]
        assert normalize_doc_for_lm(text) == lines
        want_len = sum(len(" ".join(scorer.sp.encode(line, out_type=str)).split()) + 1 for line in lines)
        want_score = sum(scorer.lm.score(" ".join(scorer.sp.encode(line, out_type=str)), bos=True, eos=True) for line in lines)
        got_score, got_len = scorer.score_lines(lines)
        assert got_len == want_len and got_score == pytest.approx(want_score)


def test_bucket_rules():
    cut = [float(i) for i in range(100)]  # p_i = i
    assert bucket_of(29.9, cut) == "head"
    assert bucket_of(30.0, cut) == "middle"
    assert bucket_of(59.9, cut) == "middle"
    assert bucket_of(60.0, cut) == "tail"
    assert bucket_of(10.0, cut, head=5, middle=8) == "tail"
    assert bucket_of(-1.0, cut) == "all"
    assert bucket_of(10.0, None) == "all"


def test_cutoffs_roundtrip_and_percentiles(tmp_path):
    from ccpipe.models.train import cutoffs_from_values

    values = {"en": [float(v) for v in range(1, 1001)], "fr": [5.0] * 50, "rare": [1.0, 2.0]}
    table = cutoffs_from_values(values, min_docs=10)
    assert set(table) == {"en", "fr"}
    assert table["en"][0] == 1.0 and table["en"][50] == pytest.approx(500.5)
    assert table["en"][30] == pytest.approx(300.7)
    save_cutoffs(table, tmp_path / "cutoff.csv")
    back = load_cutoffs(tmp_path / "cutoff.csv")
    assert back["en"][30] == pytest.approx(300.7) and back["fr"] == [5.0] * 100
    (tmp_path / "bad.csv").write_text(",en\n0,1.0\n")
    with pytest.raises(ModelError, match="bad.csv"):
        load_cutoffs(tmp_path / "bad.csv")


def test_step_buckets_and_unknown_language(tiny_models, tmp_path):
    d = tmp_path / "lm"
    d.mkdir()
    (d / "xx.sp.model").write_bytes((tiny_models / "xx.sp.model").read_bytes())
    (d / "xx.arpa").write_text(ARPA)  # a plain ARPA file serves when there is no .arpa.bin
    save_cutoffs({"xx": [float(i) / 10 + 2.0 for i in range(100)]}, d / "cutoff.csv")  # p30=5, p60=8
    step = Perplexity(model_dir=d)
    step.check()
    ctx = TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())
    step.prepare(ctx)
    docs = [
        Document(id="a", url="u", date_download="", digest="", title="", raw_content="the cat", language="xx"),
        Document(id="b", url="u", date_download="", digest="", title="", raw_content="cat the", language="xx"),
        Document(id="c", url="u", date_download="", digest="", title="", raw_content="dog dog dog dog", language="xx"),
        Document(id="d", url="u", date_download="", digest="", title="", raw_content="bonjour", language="yy"),
    ]
    out = list(step.run(docs, ctx))
    assert [d.extras["perplexity"] for d in out][0] == 2.0
    assert [d.extras["bucket"] for d in out] == ["head", "middle", "tail", "all"]
    assert out[3].extras["perplexity"] is None  # no model: null, not a sentinel value
    assert out[1].extras["perplexity"] == round(10 ** (2.7 / 3), 1)
    assert ctx.stats.step("perplexity").counters == {"bucket_head": 1, "bucket_middle": 1, "bucket_tail": 1, "bucket_all": 1,
                                                     "scored": 3, "no_model": 1}
    # calibrated on the run: the step only scores; buckets come in the run's last phase
    later = Perplexity(model_dir=d, assign_buckets=False)
    later.prepare(ctx)
    out = list(later.run([Document(id="a", url="u", date_download="", digest="", title="", raw_content="the cat",
                                   language="xx")], ctx))
    assert out[0].extras == {"perplexity": 2.0}


def test_missing_and_corrupt_models_fail_at_check(tiny_models, tmp_path):
    d = tmp_path / "lm"
    with pytest.raises(ModelError, match="no perplexity models"):
        Perplexity(model_dir=d).check()
    d.mkdir()
    (d / "xx.sp.model").write_bytes((tiny_models / "xx.sp.model").read_bytes())
    with pytest.raises(ModelError, match=r"xx\.arpa\.bin not found.*build-defaults"):
        Perplexity(model_dir=d, languages=["xx"]).check()
    (d / "xx.arpa.bin").write_bytes(b"this is not a kenlm file")
    with pytest.raises(ModelError, match=r"xx\.arpa\.bin is corrupt"):
        Perplexity(model_dir=d, languages=["xx"]).check()
    (d / "xx.sp.model").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"xx\.(sp\.model|arpa\.bin) is corrupt"):
        Perplexity(model_dir=d, languages=["xx"]).check()


def test_step_pickles_without_models(tiny_models):
    import pickle

    step = Perplexity(model_dir=tiny_models, languages=["xx"])
    step._scorers["xx"] = object()
    clone = pickle.loads(pickle.dumps(step))
    assert clone._scorers == {} and clone.model_dir == step.model_dir


@pytest.mark.skipif(find_binary("lmplz") is None, reason="lmplz not built (ccpipe models build-kenlm)")
@pytest.mark.skipif(not (SHARED / "text" / "wikitext2").is_dir(), reason="../shared/data/text absent")
def test_shuffled_words_score_worse(tmp_path):
    """A 5-gram trained with lmplz on real prose prefers held-out prose to its shuffled words."""
    from ccpipe.models.train import train_lm

    paras = [p for p in (SHARED / "text" / "wikitext2" / "valid.txt").read_text().split("\n") if len(p) > 300]
    train, held = paras[:-40], paras[-40:]
    (tmp_path / "train.txt").write_text("\n".join(train))
    info = train_lm("en", [tmp_path / "train.txt"], out_dir=tmp_path / "lm", vocab_size=2000)
    assert info["vocab_size"] > 500
    s = LMScorer(tmp_path / "lm" / "en.sp.model", tmp_path / "lm" / "en.arpa.bin")
    rng = random.Random(0)
    worse = 0
    for p in held:
        words = p.split()
        rng.shuffle(words)
        worse += s.perplexity(" ".join(words)) > s.perplexity(p)
    assert worse == len(held)
    assert math.isfinite(s.perplexity(held[0]))
