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
  language-identified and scored with the new LMs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

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


def build_default_ref(force: bool = False, seed: int = 0) -> dict:
    from ccpipe.models.ref import reference_documents, train_ref_classifier, web_documents

    out = ref_model_path()
    if out.is_file() and not force:
        return {"ref": "present"}
    pos_files = sorted((corpora_dir() / "docs").glob("*.txt")) + sorted((corpora_dir() / "wiki").glob("*.txt"))
    text = shared_data_dir() / "text"
    pos_files += sorted((text / "xquad").glob("*.txt")) + sorted((text / "ud").glob("*.tsv"))
    if not pos_files:
        raise ModelError(f"no reference prose in {corpora_dir()}: run `python scripts/fetch_corpora.py` first")
    real, demo = web_wet_files()
    if not real:
        log.warning("no real WET pages in %s: training the is-reference classifier against the demo crawl, "
                    "a poor stand-in for random web pages; retrain with `ccpipe models train-ref` on real output",
                    shared_data_dir() / "wet")
    neg = web_documents(real or demo)
    pos = reference_documents(pos_files)
    metrics = train_ref_classifier(pos, neg, out, test_frac=0.2, seed=seed)
    metrics["positives"] = [str(p) for p in pos_files]
    metrics["negatives"] = [str(p) for p in (real or demo)]
    (out.parent / (out.stem + ".metrics.json")).write_text(json.dumps(metrics, indent=2))
    return {"ref": metrics}


def build_defaults(langs=DEFAULT_LANGS, vocab_size: int = DEFAULT_VOCAB, force: bool = False) -> dict:
    """Everything the default config needs: LMs, cutoffs, is-reference classifier."""
    t0 = time.perf_counter()
    report = {"lm": build_default_lms(langs, vocab_size, force)}
    rebuilt = any(v != "present" for v in report["lm"].values())
    report.update(build_default_cutoffs(langs, force=force or rebuilt))
    report.update(build_default_ref(force))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    lm_dir().mkdir(parents=True, exist_ok=True)
    return report
