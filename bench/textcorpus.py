"""Labelled real text for the geometry benchmarks, and labelled junk.

Prose (../shared/data/text, see its README):

* XQuAD: 240 Wikipedia paragraphs in 12 languages, line i of every file the same
  paragraph: labels ``lang`` and ``group`` (the translation group).
* WikiText-2 (valid + test): paragraphs of >= 40 words, at most 12 per article: label
  ``article``. Its tokenised form (`` @-@ ``, `` , ``) is undone.
* UD PUD: 1,000 parallel sentences in en, fr, de, es: labels ``lang`` and ``group``.

Junk (label ``junk`` = 1), each kind from real material where there is any:

* ``boilerplate``: navigation and footer lines, the lines that repeat across documents
  of the real WET excerpts in ../shared/data/wet (what line dedup removes);
* ``code``: 30-line slices of the Python standard library's own source;
* ``table``: number tables (CSV rows of measurements with a header);
* ``spam``: keyword-stuffed lists (a product word list repeated with prices and
  "buy cheap" phrases, as on link farms).

Embeddings are cached under ``bench-out/`` keyed by the texts and the model.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
CACHE = ROOT / "bench-out"


@dataclass(slots=True)
class Corpus:
    texts: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    lang: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    """Translation group ("xquad:17", "pud:n01001011") or article ("wt:Homarus gammarus"); "" if none."""
    junk: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)

    def add(self, text: str, source: str, lang: str, group: str = "", junk: int = 0, kind: str = "prose") -> None:
        self.texts.append(text)
        self.source.append(source)
        self.lang.append(lang)
        self.group.append(group)
        self.junk.append(junk)
        self.kind.append(kind)

    def __len__(self) -> int:
        return len(self.texts)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)) for k in ("source", "lang", "group", "junk", "kind")}


def _detok(s: str) -> str:
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    s = re.sub(r" ([,.;:!?)\]'])", r"\1", s)
    return re.sub(r"([(\[]) ", r"\1", s).strip()


def add_xquad(c: Corpus, langs: list[str] | None = None) -> None:
    for path in sorted((DATA / "text" / "xquad").glob("xquad_contexts.*.txt")):
        lang = path.name.split(".")[1]
        if langs and lang not in langs:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            if line.strip():
                c.add(line.strip(), "xquad", lang, f"xquad:{i}")


def add_wikitext(c: Corpus, *, min_words: int = 40, per_article: int = 12) -> None:
    for name in ("valid.txt", "test.txt"):
        title, n = None, 0
        for line in (DATA / "text" / "wikitext2" / name).read_text(encoding="utf-8").splitlines():
            m = re.fullmatch(r" = ([^=].*[^=]) = ", line)
            if m:
                title, n = m.group(1).strip(), 0
                continue
            if title is None or line.startswith(" = ") or len(line.split()) < min_words or n >= per_article:
                continue
            c.add(_detok(line), "wikitext", "en", f"wt:{title}")
            n += 1


def add_pud(c: Corpus) -> None:
    for lang in ("en", "fr", "de", "es"):
        for line in (DATA / "text" / "ud" / f"{lang}_pud-ud-test.text.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            sid, _, text = line.partition("\t")
            if text.strip():
                c.add(text.strip(), "pud", lang, f"pud:{sid}")


def _wet_lines() -> list[list[str]]:
    """Documents (as lists of lines) of the real WET excerpts."""
    from warcio.archiveiterator import ArchiveIterator

    docs = []
    for path in sorted((DATA / "wet").glob("*.wet.gz")):
        try:
            with gzip.open(path, "rb") as fh:
                for rec in ArchiveIterator(fh):
                    if rec.rec_type == "conversion":
                        body = rec.content_stream().read().decode("utf-8", "replace")
                        docs.append([ln.strip() for ln in body.splitlines() if ln.strip()])
        except Exception:  # noqa: BLE001 - some excerpts are deliberately odd; what was read counts
            continue
    return docs


def junk_texts(n_per_kind: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """(kind, text) pairs, ``n_per_kind`` of each kind (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    # boilerplate: lines seen in >= 3 documents of the real excerpts
    docs = _wet_lines()
    seen = Counter(ln for d in docs for ln in set(d))
    boiler = sorted(ln for ln, k in seen.items() if k >= 3 and 3 <= len(ln) <= 120)
    for _ in range(n_per_kind):
        k = int(rng.integers(6, 20))
        out.append(("boilerplate", "\n".join(rng.choice(boiler, size=min(k, len(boiler)), replace=False))))
    # code: slices of the standard library's source
    import argparse as m1
    import collections as m2
    import email.message as m3
    import json.decoder as m4
    import logging as m5
    import pathlib as m6
    import textwrap as m7
    import unittest.case as m8

    src = [ln for mod in (m1, m2, m3, m4, m5, m6, m7, m8) for ln in inspect.getsource(mod).splitlines() if ln.strip()]
    for _ in range(n_per_kind):
        i = int(rng.integers(0, len(src) - 30))
        out.append(("code", "\n".join(src[i : i + 30])))
    # number tables
    for _ in range(n_per_kind):
        cols = int(rng.integers(3, 7))
        head = ",".join(rng.choice(["id", "date", "value", "min", "max", "mean", "count", "price", "qty", "total"], size=cols, replace=False))
        rows = [",".join(f"{v:.{int(rng.integers(0, 3))}f}" for v in rng.gamma(2.0, 50.0, size=cols)) for _ in range(int(rng.integers(8, 25)))]
        out.append(("table", head + "\n" + "\n".join(rows)))
    # spam: keyword stuffing
    words = ["cheap", "viagra", "casino", "loans", "replica watches", "free download", "best price", "discount", "online",
             "buy now", "bonus", "jackpot", "crack", "keygen", "weight loss", "pills", "porn", "dating", "crypto", "earn money fast"]
    for _ in range(n_per_kind):
        k = int(rng.integers(15, 40))
        toks = [f"{rng.choice(words)} {rng.choice(words)}" + (f" ${rng.integers(5, 500)}" if rng.random() < 0.3 else "") for _ in range(k)]
        out.append(("spam", " | ".join(toks)))
    return out


def add_junk(c: Corpus, n_per_kind: int, *, seed: int = 0) -> None:
    for kind, text in junk_texts(n_per_kind, seed=seed):
        c.add(text, "junk", "xx", "", junk=1, kind=kind)


def embed(c: Corpus, *, model: str = "minilm", max_tokens: int | None = None, batch_size: int = 64) -> np.ndarray:
    """len(c) x 384 unit vectors. Cached per text (sha1) and embedder settings in
    bench-out/, so corpora that share texts embed them once."""
    from geometry.embed import EmbedConfig, Embedder

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"emb-cache-{model}-{max_tokens}.npz"
    cache: dict[str, np.ndarray] = dict(np.load(path)) if path.exists() else {}
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in c.texts]
    todo = sorted({k: t for k, t in zip(keys, c.texts) if k not in cache}.items())
    if todo:
        emb = Embedder(EmbedConfig(progress=False, batch_size=batch_size, model=model, max_tokens=max_tokens))
        for lo in range(0, len(todo), 512):
            chunk = todo[lo : lo + 512]
            for (k, _), v in zip(chunk, emb.embed([t for _, t in chunk])):
                cache[k] = v
            np.savez(path.with_suffix(".tmp.npz"), **cache)
            Path(path.with_suffix(".tmp.npz")).replace(path)
    return np.stack([cache[k] for k in keys]).astype(np.float32)
