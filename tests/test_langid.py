"""Language identification with the real lid.176 model on real labelled text."""

from __future__ import annotations

import pytest

from ccpipe.document import Document
from ccpipe.errors import ConfigError, ModelError
from ccpipe.stats import Stats
from ccpipe.steps.base import TaskContext
from ccpipe.steps.langid import LanguageId
from tests.conftest import data_path


def doc(text: str, i: int = 0) -> Document:
    return Document(id=str(i), url="u", date_download="", digest="", title="", raw_content=text)


@pytest.fixture(scope="module")
def lid():
    step = LanguageId()
    step.prepare(None)
    return step


@pytest.mark.parametrize("lang", ["en", "fr", "de", "es"])
def test_real_sentences_get_their_language(lid, lang):
    path = data_path("text", "ud", f"{lang}_pud-ud-test.text.tsv")
    sentences = [ln.split("\t", 1)[1] for ln in path.read_text().splitlines()[:200] if "\t" in ln]
    labels = [lid.predict(s)[0] for s in sentences]
    assert sum(lab == lang for lab in labels) / len(labels) >= 0.95


def test_threshold_drops_with_a_reason_and_labels_the_rest(lid, tmp_path):
    ctx = TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())
    docs = [doc("Le chat est assis sur le tapis et regarde la pluie tomber.", 0), doc("12 34 ++ ?? 56", 1)]
    strict = LanguageId(threshold=0.5)
    strict._model = lid._model
    kept = list(strict.run(docs, ctx))
    assert [d.id for d in kept] == ["0"]
    assert kept[0].language == "fr" and kept[0].language_score > 0.9
    assert ctx.stats.steps["lang_id"].dropped == {"below_threshold": 1}
    assert docs[1].language_score < 0.5  # labelled even when dropped


def test_newlines_do_not_break_prediction(lid):
    lang, score = lid.predict("Dies ist ein Satz.\nUnd hier kommt noch einer auf Deutsch.\n")
    assert lang == "de" and 0.5 < score <= 1.0


def test_missing_model_fails_early(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LanguageId(model=str(tmp_path / "lid.176.bin")).check()
    from ccpipe.config import load_config

    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, {"langid.model": str(tmp_path / "nope.bin")})


def test_step_pickles_without_its_model(lid):
    import pickle

    clone = pickle.loads(pickle.dumps(lid))
    assert clone._model is None and clone.threshold == lid.threshold
