"""The default models, built during set-up from what a fresh machine can get offline.

``build_defaults`` (``ccpipe models build-defaults``) is idempotent: each model is
built only when its files are missing (or with ``force``), and a run with
everything present returns in well under a second. Inputs:

* LM corpora: ``$CCPIPE_HOME/corpora/docs/<lang>.txt`` (Debian documentation
  prose) plus ``corpora/wiki/en.txt`` (gensim's English Wikipedia sample), as
  fetched by ``scripts/fetch_corpora.py``;
* is-reference positives: the same corpora plus ``../shared/data/text`` when it
  exists; negatives: real Common Crawl WET pages (``../shared/data/wet``), or,
  without them, the demo crawl (documentation pages with their navigation: a
  poor stand-in, a warning says so);
* cutoff sample: web pages from the same WET files and the demo crawl,
  language-identified and scored with the new LMs;
* quality_score: held-out reference prose and the real WET pages (profile), and
  people's labels in ``../shared/data/quality`` when present (two weights).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ccpipe.errors import ModelError
from ccpipe.models import cutoff_path, kenlm_path, lm_dir, ref_model_path, sp_path
from ccpipe.models.kenlm_tools import kenlm_tools
from ccpipe.paths import corpora_dir, demo_dir

log = logging.getLogger(__name__)

DEFAULT_LANGS = ("en", "fr", "de", "es")
DEFAULT_VOCAB = 8000


def shared_data_dir() -> Path:
    """``../shared/data`` beside the project checkout (real test data, when present)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def lm_corpora(lang: str) -> list[Path]:
    paths = [corpora_dir() / "docs" / f"{lang}.txt"]
    if lang == "en":
        paths.append(corpora_dir() / "wiki" / "en.txt")
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise ModelError(
            f"no reference corpus for {lang} in {corpora_dir()}; fetch them with "
            "`python scripts/fetch_corpora.py` (part of scripts/setup.sh)"
        )
    return paths


def web_wet_files() -> tuple[list[Path], list[Path]]:
    """(real Common Crawl excerpts, demo crawl) WET files available offline."""
    shared = shared_data_dir() / "wet"
    real = [p for p in sorted(shared.glob("*.wet.gz")) if "single-gzip-stream" not in p.name]  # same records twice
    demo = [demo_dir() / "demo.warc.wet.gz"] if (demo_dir() / "demo.warc.wet.gz").is_file() else []
    return real, demo


def build_default_lms(langs=DEFAULT_LANGS, vocab_size: int = DEFAULT_VOCAB, force: bool = False) -> dict:
    from ccpipe.models.train import train_lm

    kenlm_tools(build=True)
    report = {}
    for lang in langs:
        if not force and sp_path(lang).is_file() and kenlm_path(lang).is_file():
            report[lang] = "present"
            continue
        report[lang] = train_lm(lang, lm_corpora(lang), vocab_size=vocab_size)
    return report


def build_default_cutoffs(langs=DEFAULT_LANGS, force: bool = False, max_docs: int = 5000) -> dict:
    """Percentiles of web-page perplexities per language (``lm/cutoff.csv``)."""
    from ccpipe.io.wet import read_wet
    from ccpipe.models.train import cutoffs_from_values
    from ccpipe.stats import Stats
    from ccpipe.steps.langid import LanguageId
    from ccpipe.steps.perplexity import LMScorer, save_cutoffs

    out = cutoff_path()
    real, demo = web_wet_files()
    sources = out.with_name("cutoff.sources.json")
    used = sorted(str(p) for p in real + demo)
    # a later set-up step (the demo crawl) may bring a larger web sample: recompute then
    if out.is_file() and not force and sources.is_file() and json.loads(sources.read_text()) == used:
        return {"cutoffs": "present"}
    if not real and not demo:
        raise ModelError("no web sample for perplexity cutoffs: build the demo crawl (scripts/make_demo_wet.py) "
                         "or compute them from a run with `ccpipe models cutoffs RUN_DIR`")
    lid = LanguageId(max_chars=2000)
    lid.prepare(None)  # type: ignore[arg-type]
    scorers = {lang: LMScorer(sp_path(lang), kenlm_path(lang)) for lang in langs}

    def score(paths: list[Path]) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {lang: [] for lang in langs}
        for path in paths:
            for doc in read_wet(str(path), Stats()):
                lang, conf = lid.predict(doc.raw_content)
                if lang in scorers and conf >= 0.5 and len(values[lang]) < max_docs:
                    values[lang].append(scorers[lang].perplexity(doc.raw_content))
        return values

    # Real crawl pages first. The demo crawl is the same documentation the LMs were
    # trained on (it scores far lower than web pages), so it only stands in for a
    # language with too few real pages, and the table says which sample each used.
    min_docs = 20
    values, origin = score(real), {}
    demo_values = score(demo) if demo and any(len(v) < min_docs for v in values.values()) else {}
    for lang in langs:
        origin[lang] = "real crawl excerpts"
        if len(values[lang]) < min_docs and len(demo_values.get(lang, [])) >= min_docs:
            values[lang], origin[lang] = demo_values[lang], "demo crawl (in-domain for the LM: cutoffs too low)"
    table = cutoffs_from_values(values, min_docs=min_docs)
    if not table:
        raise ModelError(f"too few web documents in {[str(p) for p in real + demo]} to compute cutoffs")
    save_cutoffs(table, out)
    sources.write_text(json.dumps(used))
    report = {lang: {"docs": len(values[lang]), "sample": origin[lang], "p30": round(table[lang][30], 1),
                     "p60": round(table[lang][60], 1)} if lang in table else f"{len(values[lang])} docs: left out"
              for lang in langs}
    out.with_name("cutoff.report.json").write_text(json.dumps(report, indent=2))
    return {"cutoffs": report}


REF_RECIPE = 3
"""Bumped when the default classifier's training data changes, so set-up rebuilds it."""


def _default_ref_sources():
    from ccpipe.models.quality import reference_sources

    text = shared_data_dir() / "text"
    return reference_sources(corpora_dir(), text if text.is_dir() else None)


def _web_pages(paths: list[Path]) -> list:
    from ccpipe.io.wet import read_wet
    from ccpipe.stats import Stats

    return [d for p in paths for d in read_wet(str(p), Stats()) if len(d.raw_content) >= 200]


def balance_by_language(pos: list[tuple[str, str]], neg: list[tuple[str, str]],
                        seed: int = 0) -> tuple[list[str], list[str], dict[str, int]]:
    """As many positives as negatives *in every language*, and no language with only
    one class: otherwise the classifier learns which languages are more often
    reference text (it scored every Russian and Chinese page 0, reference prose
    included, when the negatives were mostly Russian and Chinese pages)."""
    import random

    rng = random.Random(seed)
    by: dict[str, tuple[list[str], list[str]]] = {}
    for lang, d in pos:
        by.setdefault(lang, ([], []))[0].append(d)
    for lang, d in neg:
        by.setdefault(lang, ([], []))[1].append(d)
    p_out, n_out, used = [], [], {}
    for lang, (p, n) in sorted(by.items()):
        k = min(len(p), len(n))
        if k == 0:
            continue
        rng.shuffle(p)
        rng.shuffle(n)
        p_out += p[:k]
        n_out += n[:k]
        used[lang] = k
    return p_out, n_out, used


def build_default_ref(force: bool = False, seed: int = 0) -> dict:
    """The is-reference classifier. Positives: the training part of every reference
    source (Debian documentation, the Wikipedia sample, XQuAD and UD; their held-out
    parts stay out, see ``ccpipe.models.quality``); negatives: real WET pages, except
    the held-out quarter, cut into pieces of >= 1,000 characters (the size of the
    positive documents); both balanced per language (``balance_by_language``)."""
    from ccpipe.models.quality import is_held_out_page, positive_documents
    from ccpipe.models.ref import chunk_lines, train_ref_classifier
    from ccpipe.steps.langid import LanguageId

    out = ref_model_path()
    metrics_path = out.parent / (out.stem + ".metrics.json")
    if out.is_file() and not force and metrics_path.is_file() \
            and json.loads(metrics_path.read_text()).get("recipe") == REF_RECIPE:
        return {"ref": "present"}
    sources = _default_ref_sources()
    if not sources:
        raise ModelError(f"no reference prose in {corpora_dir()}: run `python scripts/fetch_corpora.py` first")
    real, demo = web_wet_files()
    if not real:
        log.warning("no real WET pages in %s: training the is-reference classifier against the demo crawl, "
                    "a poor stand-in for random web pages; retrain with `ccpipe models train-ref` on real output",
                    shared_data_dir() / "wet")
    lid = LanguageId(max_chars=2000)
    lid.prepare(None)  # type: ignore[arg-type]
    pages = [d for d in _web_pages(real or demo) if not is_held_out_page(d.id)]
    neg = [(lid.predict(d.raw_content)[0], c) for d in pages for c in chunk_lines(d.raw_content)]
    pos = [(s.lang, d) for s in sources for d in positive_documents([s])]
    pos_docs, neg_docs, per_language = balance_by_language(pos, neg, seed)
    metrics = train_ref_classifier(pos_docs, neg_docs, out, test_frac=0.2, seed=seed)
    metrics["recipe"] = REF_RECIPE
    metrics["per_language"] = per_language
    metrics["positives"] = sorted({str(s.path) for s in sources})
    metrics["negatives"] = {"files": [str(p) for p in (real or demo)], "pages": len(pages), "pieces": len(neg)}
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return {"ref": metrics}


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, int(st.st_mtime)]


def dev_labels_path() -> Path:
    """People's labels shipped beside the project (DCLM's, a dev set), when present."""
    return shared_data_dir() / "quality" / "human_labels_dev.jsonl"


def build_default_quality(langs=DEFAULT_LANGS, force: bool = False) -> dict:
    """The ``quality_score`` model: profile from held-out reference prose and real web
    pages, weights fitted on the dev labels when they are present (``equal``: two
    numbers), else the unfitted prior. Rebuilt when the models it reads change."""
    from ccpipe.evaluate import read_labels
    from ccpipe.models import quality_model_path
    from ccpipe.models.quality import (PROFILE_VERSION, SignalReader, build_profile, char_ratios, fit_quality, function_word_lists,
                                       held_out_documents, is_held_out_page, language_report, prior_weights,
                                       save_report)
    from ccpipe.steps.langid import LanguageId
    from ccpipe.steps.perplexity import Perplexity, load_cutoffs
    from ccpipe.steps.quality_score import QualityModel
    from ccpipe.steps.ref_classifier import RefClassifier

    out = quality_model_path()
    labels = dev_labels_path()
    real, demo = web_wet_files()
    inputs = [ref_model_path(), cutoff_path()] + [p for lang in langs for p in (sp_path(lang), kenlm_path(lang))]
    stamp = {"recipe": PROFILE_VERSION, "inputs": [_file_stamp(p) for p in inputs if p.is_file()],
             "labels": _file_stamp(labels) if labels.is_file() else None,
             "web": [str(p) for p in real or demo]}
    if out.is_file() and not force:
        try:
            if json.loads(out.read_text()).get("info", {}).get("stamp") == stamp:
                return {"quality": "present"}
        except ValueError:
            pass  # unreadable: rebuild it
    sources = _default_ref_sources()
    profile = QualityModel(center={}, default_center={}, scale={}, weights=prior_weights(), bias=0.0,
                           char_ratio=char_ratios(sources), function_words=function_word_lists(sources))
    lid = LanguageId(max_chars=2000)
    lid.prepare(None)  # type: ignore[arg-type]
    perp = Perplexity(languages=[lang for lang in langs if sp_path(lang).is_file() and kenlm_path(lang).is_file()])
    perp.prepare(None)  # type: ignore[arg-type]
    ref = RefClassifier()
    ref.prepare(None)  # type: ignore[arg-type]
    reader = SignalReader(profile, lid, perp, ref)
    held_docs = held_out_documents(sources)
    held = [(lang, reader.read(doc, lang)[1]) for lang, doc in held_docs]
    pages = _web_pages(real or demo)
    web = []
    web_held = []
    for d in pages:
        lang, conf = lid.predict(d.raw_content)
        if conf < 0.5:
            continue
        row = (lang, reader.read(d.raw_content, lang)[1])
        web.append(row)
        if is_held_out_page(d.id):
            web_held.append(row)
    # centres from half of the held-out prose, the per-language check on the other half
    cutoffs = load_cutoffs(cutoff_path()) if cutoff_path().is_file() else None
    build_profile(sources, web, held[0::2], profile, cutoffs)
    report: dict = {"profile": profile.info["profile"]}
    if labels.is_file():
        rows = read_labels(labels, "text")
        signals = [reader.read(r["text"]) for r in rows]
        report["fit"] = fit_quality(profile, signals, np.array([r["label"] for r in rows]), "equal", str(labels))
    else:
        log.warning("no labels at %s: quality_score keeps its unfitted prior weights (equal, bias 0); "
                    "fit them with `ccpipe models fit-quality LABELS.jsonl`", labels)
        profile.info["fit"] = report["fit"] = "none: no labels"
    report["languages"] = profile.info["languages"] = language_report(profile, held[1::2], web_held)
    profile.info["stamp"] = stamp
    profile.save(out)
    save_report(out, report)
    return {"quality": report}


def build_defaults(langs=DEFAULT_LANGS, vocab_size: int = DEFAULT_VOCAB, force: bool = False) -> dict:
    """Everything the default config needs: LMs, cutoffs, is-reference classifier."""
    t0 = time.perf_counter()
    report = {"lm": build_default_lms(langs, vocab_size, force)}
    rebuilt = any(v != "present" for v in report["lm"].values())
    report.update(build_default_cutoffs(langs, force=force or rebuilt))
    report.update(build_default_ref(force))
    report.update(build_default_quality(langs, force))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    lm_dir().mkdir(parents=True, exist_ok=True)
    return report
