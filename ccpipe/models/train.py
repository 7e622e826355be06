"""Train the pipeline's models offline: SentencePiece + KenLM per language, cutoffs.

CCNet trains a SentencePiece unigram model (vocab 65,536) and a KenLM 5-gram
(``lmplz -o 5 --discount_fallback``) on the first 1 M Wikipedia articles of each
language. Offline we only have a few MB of prose per language from package
registries, so the default vocabulary is smaller (``DEFAULT_VOCAB``): a 65k
vocabulary on 2 MB of text would be mostly single-use pieces. Released CCNet
models can be installed instead (:func:`install_lm`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterable

import numpy as np

from ccpipe.errors import ModelError
from ccpipe.models import kenlm_path, lm_dir, sp_path
from ccpipe.models.kenlm_tools import run_build_binary, run_lmplz
from ccpipe.steps.perplexity import normalize_doc_for_lm, save_cutoffs

log = logging.getLogger(__name__)

DEFAULT_VOCAB = 8000
CCNET_VOCAB = 65536


def _normalized_lines(paths: Iterable[Path], max_chars: int = 0) -> Iterable[str]:
    total = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                for line in normalize_doc_for_lm(raw.rstrip("\n")):
                    if line:
                        yield line
                        total += len(line)
                if max_chars and total >= max_chars:
                    return


def train_sentencepiece(corpus: Path, prefix: Path, vocab_size: int = DEFAULT_VOCAB, threads: int = 2) -> Path:
    """Unigram SentencePiece on an already LM-normalised corpus; returns ``<prefix>.model``."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=0.9999,
        hard_vocab_limit=False,  # small corpora: take what the text supports
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        num_threads=threads,
        minloglevel=2,
    )
    return Path(f"{prefix}.model")


def train_lm(
    lang: str,
    corpora: list[Path],
    out_dir: Path | None = None,
    vocab_size: int = DEFAULT_VOCAB,
    order: int = 5,
    max_chars: int = 0,
) -> dict:
    """Train ``<lang>.sp.model`` and ``<lang>.arpa.bin`` from text files (one paragraph a line)."""
    import sentencepiece as spm

    out = lm_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"ccpipe-lm-{lang}-") as tmp:
        tmpd = Path(tmp)
        norm = tmpd / "normalized.txt"
        n_lines = n_chars = 0
        with norm.open("w", encoding="utf-8") as f:
            for line in _normalized_lines(corpora, max_chars):
                f.write(line + "\n")
                n_lines += 1
                n_chars += len(line)
        if n_lines < 100:
            raise ModelError(f"corpus for {lang} has only {n_lines} lines ({', '.join(map(str, corpora))}); need real prose")
        model = train_sentencepiece(norm, tmpd / lang, vocab_size)
        sp = spm.SentencePieceProcessor()
        sp.Load(str(model))
        tokenized = tmpd / "tokenized.txt"
        with norm.open(encoding="utf-8") as fin, tokenized.open("w", encoding="utf-8") as fout:
            batch: list[str] = []
            for line in fin:
                batch.append(line.rstrip("\n"))
                if len(batch) == 10000:
                    fout.writelines(" ".join(p) + "\n" for p in sp.encode(batch, out_type=str))
                    batch = []
            fout.writelines(" ".join(p) + "\n" for p in sp.encode(batch, out_type=str))
        t1 = time.perf_counter()
        arpa = tmpd / f"{lang}.arpa"
        run_lmplz(tokenized, arpa, order=order, tmp_dir=tmpd)
        run_build_binary(arpa, kenlm_path(lang, out))
        shutil.copy2(model, sp_path(lang, out).with_suffix(".tmp"))
        sp_path(lang, out).with_suffix(".tmp").replace(sp_path(lang, out))
    info = {
        "language": lang,
        "lines": n_lines,
        "chars": n_chars,
        "vocab_size": sp.GetPieceSize(),
        "order": order,
        "sp_model_bytes": sp_path(lang, out).stat().st_size,
        "kenlm_bytes": kenlm_path(lang, out).stat().st_size,
        "seconds_sentencepiece": round(t1 - t0, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "corpora": [str(p) for p in corpora],
    }
    log.info("trained %s LM: %s", lang, info)
    return info


def _fetch(src: str, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    if "://" in src:
        log.info("downloading %s", src)
        with urllib.request.urlopen(src, timeout=60) as r, tmp.open("wb") as f:
            shutil.copyfileobj(r, f)
    else:
        p = Path(src).expanduser()
        if not p.is_file():
            raise ModelError(f"{p} does not exist")
        shutil.copy2(p, tmp)
    tmp.replace(dest)


def install_lm(lang: str, sp_model: str, lm_model: str, out_dir: Path | None = None) -> None:
    """Install released models (CCNet's ``<lang>.sp.model`` + ``<lang>.arpa.bin``) by path or URL."""
    out = lm_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _fetch(sp_model, sp_path(lang, out))
    _fetch(lm_model, kenlm_path(lang, out))
    from ccpipe.steps.perplexity import LMScorer

    LMScorer(sp_path(lang, out), kenlm_path(lang, out))  # fails now if either is unreadable


def percentiles(values: Iterable[float]) -> list[float]:
    """p0..p99 of the values (numpy's linear interpolation)."""
    arr = np.asarray([v for v in values if v >= 0], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no perplexities to take percentiles of")
    return [float(x) for x in np.percentile(arr, np.arange(100))]


def cutoffs_from_values(by_lang: dict[str, list[float]], min_docs: int = 10) -> dict[str, list[float]]:
    """Percentile table for every language with at least ``min_docs`` scored documents."""
    table = {}
    for lang, values in sorted(by_lang.items()):
        vals = [v for v in values if v >= 0]
        if len(vals) < min_docs:
            log.warning("cutoffs: %s has only %d scored documents; left out", lang, len(vals))
            continue
        table[lang] = percentiles(vals)
    return table


def cutoffs_from_run(run_dir: Path, out: Path, sample: int = 0, min_docs: int = 10, seed: int = 0) -> dict[str, list[float]]:
    """Per-language percentiles of the ``perplexity`` column of a finished run's parquet."""
    from ccpipe.io.dataset import read_rows, shard_files

    files = shard_files(run_dir)
    if not files:
        raise ModelError(f"no parquet shards under {run_dir}: run the pipeline with perplexity enabled first")
    table = read_rows(run_dir, ["language", "perplexity"], files)
    langs = table.column("language").to_pylist()
    pps = table.column("perplexity").to_numpy(zero_copy_only=False)
    by_lang: dict[str, list[float]] = {}
    for lang, v in zip(langs, pps):
        by_lang.setdefault(lang or "unknown", []).append(float(v))
    if sample:
        rng = np.random.default_rng(seed)
        by_lang = {k: list(rng.permutation(v)[:sample]) for k, v in by_lang.items()}
    result = cutoffs_from_values(by_lang, min_docs)
    save_cutoffs(result, out)
    return result
