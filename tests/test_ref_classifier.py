"""Is-reference classifier: held-out separation on real data, the step, AUC arithmetic."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from ccpipe.document import Document
from ccpipe.errors import ModelError
from ccpipe.stats import Stats
from ccpipe.steps.base import TaskContext

pytest.importorskip("fasttext")

from ccpipe.models.ref import group_paragraphs, reference_documents, roc_auc, train_ref_classifier, web_documents  # noqa: E402
from ccpipe.steps.ref_classifier import RefClassifier  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "text").is_dir() or not (SHARED / "wet").is_dir(),
                                  reason="real data in ../shared/data absent")


def test_roc_auc_known_values():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.5  # ties count half
    with pytest.raises(ValueError):
        roc_auc(np.array([0.1]), np.array([1]))


def test_group_paragraphs_reaches_min_chars():
    docs = group_paragraphs(["a" * 400, "b" * 400, "c" * 300, "d" * 900, "e" * 10, "f" * 20], min_chars=1000)
    assert docs == ["\n".join(["a" * 400, "b" * 400, "c" * 300])]  # a short tail is dropped


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Positives: Wikipedia/news prose (XQuAD, UD, WikiText-2); negatives: real WET pages.

    Documents are split into train / held-out *before* training (per document,
    seeded), so the metrics below are on text the classifier never saw.
    """
    if not (SHARED / "text").is_dir() or not (SHARED / "wet").is_dir():
        pytest.skip("real data in ../shared/data absent")
    text = SHARED / "text"
    pos = reference_documents(
        sorted((text / "xquad").glob("*.txt")) + sorted((text / "ud").glob("*.tsv")) + [text / "wikitext2" / "valid.txt"]
    )
    # the single-gzip-stream file holds the same records as the per-record one: read one of them
    wets = [p for p in sorted((SHARED / "wet").glob("*.wet.gz")) if "single-gzip-stream" not in p.name]
    neg = web_documents(wets)
    out = tmp_path_factory.mktemp("ref") / "ref.bin"
    metrics = train_ref_classifier(pos, neg, out, test_frac=0.3, seed=0)
    return out, metrics, neg


@needs_shared
def test_separates_held_out_reference_prose_from_web_pages(trained):
    _, metrics, _ = trained
    held = metrics["held_out"]
    assert held["n_neg"] >= 50 and held["n_pos"] >= 500
    assert held["roc_auc"] >= 0.9, metrics
    assert held["precision"] >= 0.9 and held["recall"] >= 0.8, metrics


@needs_shared
def test_step_scores_and_drops_below_threshold(trained, tmp_path):
    path, _, neg = trained
    step = RefClassifier(model=path, threshold=0.25, drop=True)
    step.check()
    clone = pickle.loads(pickle.dumps(step))
    ctx = TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())
    clone.prepare(ctx)
    prose = (SHARED / "text" / "xquad" / "xquad_contexts.en.txt").read_text().split("\n")[-3:]
    docs = [Document(id=str(i), url="u", date_download="", digest="", title="", raw_content=t)
            for i, t in enumerate(["\n".join(prose)] + neg[:40])]
    out = list(clone.run(docs, ctx))
    kept_ids = {d.id for d in out}
    assert "0" in kept_ids and docs[0].extras["ref_score"] > 0.5
    assert all(0.0 <= d.extras["ref_score"] <= 1.0 for d in docs)
    n_dropped = ctx.stats.step("ref_classifier").dropped["below_threshold"]
    assert n_dropped == len(docs) - len(out) and n_dropped >= 20
    assert all(d.extras["ref_score"] >= 0.25 for d in out)
    keep_all = RefClassifier(model=path, drop=False)
    keep_all.prepare(ctx)
    assert len(list(keep_all.run(docs, TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())))) == len(docs)


def test_missing_or_corrupt_classifier_fails_with_hint(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.bin not found.*train-ref"):
        RefClassifier(model=tmp_path / "nope.bin").check()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"bad\.bin"):
        RefClassifier(model=bad).check()


def test_too_few_documents_is_an_error(tmp_path):
    rng = random.Random(0)
    with pytest.raises(ModelError, match="at least 10"):
        train_ref_classifier(["x " * rng.randint(1, 5)] * 3, ["y"] * 30, tmp_path / "m.bin")
