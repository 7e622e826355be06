"""The HTTP API against a real uvicorn server on loopback, over a real run."""

from __future__ import annotations

import asyncio
import math

import httpx
import pyarrow.parquet as pq
import pytest

from svc_helpers import english_shard

from ccpipe.io.dataset import partition_name
from geometry.api import GeometryIndex


@pytest.fixture(scope="module")
def gi(real_run) -> GeometryIndex:
    """An independent index over the same run: what the service must agree with."""
    return GeometryIndex.open(real_run)


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as c:
        yield c


def test_health_needs_no_token_and_describes_the_run(server, gi) -> None:
    r = httpx.get(f"{server.url}/v1/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["documents"] == gi.store.count and h["dim"] == 384
    assert h["lam"] == pytest.approx(gi.lam) and h["limits"]["max_k"] == 50
    assert set(h["modes"]) == {"geodesic", "upper", "graph"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}])
def test_token_required(server, doc_ids, headers) -> None:
    body = {"a": {"id": doc_ids[0]}, "b": {"id": doc_ids[1]}, "mode": "upper"}
    r = httpx.post(f"{server.url}/v1/distance", json=body, headers=headers)
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert httpx.get(f"{server.url}/v1/documents/{doc_ids[0]}", headers=headers).status_code == 401
    assert httpx.post(f"{server.url}/v1/distance", json=body, headers=server.auth).status_code == 200


def test_document_lookup(http, server, doc_ids) -> None:
    shard = english_shard(server.run)
    table = pq.read_table(shard).to_pylist()
    want = table[3]
    r = http.get(f"/v1/documents/{doc_ids[3]}")
    assert r.status_code == 200
    got = r.json()
    assert got["partition"] == partition_name(shard) and got["id"] == want["id"]
    assert got["fields"]["language"] == "en"
    assert got["fields"]["url"] == want["url"] and got["fields"]["title"] == want["title"]
    assert "raw_content" not in got["fields"]
    full = http.get(f"/v1/documents/{doc_ids[3]}", params={"text": "true"}).json()
    assert full["fields"]["raw_content"] == want["raw_content"]
    r = http.get("/v1/documents/<urn:uuid:not-there>")
    assert r.status_code == 404 and "not-there" in r.json()["detail"]


# The score model runs in float32, whose sums depend on the batch layout: the service's
# batched calls agree with the index's own calls to about 1e-7, not to the last bit.


def test_distance_by_id_matches_the_index(http, gi, doc_ids) -> None:
    a, b = doc_ids[0], doc_ids[5]
    want = gi.distance(a, b, mode="upper")
    got = http.post("/v1/distance", json={"a": {"id": a}, "b": {"id": b}, "mode": "upper"}).json()
    assert got["mode"] == "upper" and got["converged"] is True
    assert got["distance"] == pytest.approx(want.distance, rel=1e-6)
    assert got["energy"] == pytest.approx(want.energy, rel=1e-6)
    geo = http.post("/v1/distance", json={"a": {"id": a}, "b": {"id": b}}).json()
    assert geo["mode"] == "geodesic" and geo["converged"] is True
    assert geo["distance"] <= got["distance"] * (1 + 1e-6)
    graph = http.post("/v1/distance", json={"a": {"id": a}, "b": {"id": b}, "mode": "graph"}).json()
    assert graph["mode"] == "graph" and graph["distance"] == pytest.approx(gi.distance(a, b, mode="graph").distance, rel=1e-6)


def test_distance_of_texts_embedded_on_the_fly(http, gi, doc_ids) -> None:
    text = "The striker scored twice in the second half of the match."
    same = http.post("/v1/distance", json={"a": {"text": text}, "b": {"text": text}, "mode": "upper"}).json()
    # float32 embeddings of one text in two batch slots agree to ~1e-7 per coordinate
    assert same["converged"] and same["distance"] == pytest.approx(0.0, abs=1e-4) and same["b"].startswith("text:")
    mixed = http.post("/v1/distance", json={"a": {"id": doc_ids[0]}, "b": {"text": text}, "mode": "upper"}).json()
    import torch

    x = gi.vectors([doc_ids[0]])
    y = torch.from_numpy(gi.embed_texts([text])).double()
    want = gi.distance_vectors(x, y, "upper")
    assert mixed["distance"] == pytest.approx(float(want.distance[0]), rel=1e-6)


def test_batch_of_pairs(http, gi, doc_ids) -> None:
    pairs = [(doc_ids[i], doc_ids[i + 1]) for i in range(6)]
    r = http.post("/v1/distances", json={"pairs": [[{"id": a}, {"id": b}] for a, b in pairs], "mode": "upper"})
    assert r.status_code == 200
    got = r.json()
    assert got["converged"] and [x["a"] for x in got["results"]] == [a for a, _ in pairs]
    want = [d.distance for d in gi.distances(pairs, mode="upper")]
    assert [x["distance"] for x in got["results"]] == pytest.approx(want, rel=1e-6)


def test_neighbours_k10_from_100_candidates(http, gi, doc_ids) -> None:
    q = doc_ids[2]
    got = http.post("/v1/neighbours", json={"query": {"id": q}, "k": 10, "candidates": 100}).json()
    assert got["mode"] == "upper" and got["k"] == 10 and got["candidates"] == 100 and got["converged"]
    ids = [n["id"] for n in got["neighbours"]]
    assert len(ids) == 10 and q not in ids and len(set(ids)) == 10
    dists = [n["distance"] for n in got["neighbours"]]
    assert dists == sorted(dists)
    want = gi.neighbours(q, 10, mode="upper", candidates=100)
    assert ids == [n.id for n in want]
    assert dists == pytest.approx([n.distance for n in want], rel=1e-6)
    by_text = http.post("/v1/neighbours", json={"query": {"text": "open source hardware hackerspace"}, "k": 5}).json()
    assert len(by_text["neighbours"]) == 5 and by_text["query"].startswith("text:")


def test_path_lists_documents_along_it(http, doc_ids) -> None:
    a, b = doc_ids[0], doc_ids[7]
    got = http.post("/v1/path", json={"a": a, "b": b, "n_points": 9}).json()
    assert got["mode"] == "geodesic" and got["n_points"] == 9 and isinstance(got["converged"], bool)
    docs = got["documents"]
    assert docs[0]["id"] == a and docs[-1]["id"] == b
    assert sorted(i for d in docs for i in d["points"]) == list(range(9))
    assert docs[0]["url"] and docs[0]["title"] is not None
    if got["converged"]:
        assert got["distance"] > 0 and math.isfinite(got["energy"])


def test_embed(http, gi) -> None:
    texts = ["a page about cooking pasta", "a page about football"]
    got = http.post("/v1/embed", json={"texts": texts}).json()
    assert got["dim"] == 384 and len(got["vectors"]) == 2 and got["converged"] is True
    want = gi.embed_texts(texts)
    for v, w in zip(got["vectors"], want):
        assert math.fsum(x * x for x in v) == pytest.approx(1.0, abs=1e-5)
        assert v == pytest.approx(w.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/distance", {"a": {"text": "x" * 5001}, "b": {"text": "y"}}, 413, "max_text_chars"),
        ("/v1/neighbours", {"query": {"id": "whatever"}, "k": 51}, 422, "max_k"),
        ("/v1/neighbours", {"query": {"id": "whatever"}, "candidates": 5000}, 422, "max_candidates"),
        ("/v1/neighbours", {"query": {"id": "whatever"}, "k": 0}, 422, "greater than or equal to 1"),
        ("/v1/embed", {"texts": ["t"] * 17}, 422, "max_batch"),
        ("/v1/distances", {"pairs": [[{"text": "a"}, {"text": "b"}]] * 17}, 422, "max_batch"),
        ("/v1/path", {"a": "p", "b": "q", "n_points": 21}, 422, "max_path_points"),
        ("/v1/distance", {"a": {"id": "p", "text": "q"}, "b": {"id": "r"}}, 422, "exactly one"),
        ("/v1/distance", {"a": {"id": "p"}, "b": {"id": "r"}, "mode": "euclid"}, 422, "geodesic"),
        ("/v1/embed", {"texts": ["z" * 250_000]}, 413, "max_body_bytes"),
    ],
)
def test_limits_answer_4xx_with_a_clear_message(http, path, body, status, words) -> None:
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    assert words in r.text


def test_unknown_id_is_404(http, doc_ids) -> None:
    r = http.post("/v1/distance", json={"a": {"id": doc_ids[0]}, "b": {"id": "<urn:uuid:missing>"}, "mode": "upper"})
    assert r.status_code == 404 and "missing" in r.json()["detail"]
    assert http.post("/v1/neighbours", json={"query": {"id": "<urn:uuid:missing>"}}).status_code == 404
    assert http.post("/v1/path", json={"a": "<urn:uuid:missing>", "b": doc_ids[0]}).status_code == 404


def test_concurrent_requests_are_batched_and_agree_with_single_calls(server, http, doc_ids) -> None:
    """32 concurrent distance requests: fewer score-model calls than requests, same answers."""
    pairs = [(doc_ids[i % len(doc_ids)], doc_ids[(3 * i + 1) % len(doc_ids)]) for i in range(32)]
    single = [http.post("/v1/distance", json={"a": {"id": a}, "b": {"id": b}, "mode": "upper"}).json()["distance"] for a, b in pairs[:4]]
    before = http.get("/v1/stats").json()["score"]

    async def burst() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as c:
            rs = await asyncio.gather(*(c.post("/v1/distance", json={"a": {"id": a}, "b": {"id": b}, "mode": "upper"}) for a, b in pairs))
        assert all(r.status_code == 200 for r in rs)
        return [r.json() for r in rs]

    got = asyncio.run(burst())
    after = http.get("/v1/stats").json()["score"]
    calls, items = after["calls"] - before["calls"], after["items"] - before["items"]
    assert items == 32
    assert calls < items and after["max_batch"] > 1
    assert [g["distance"] for g in got[:4]] == pytest.approx(single, rel=1e-6)
