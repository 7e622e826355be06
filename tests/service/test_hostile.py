"""The service under hostile input: every bad request gets a 4xx with a short, readable
message, never a 500, and never an echo of more than a short prefix of what was sent.

A real uvicorn server on loopback (the session's ``server``: max_body_bytes 200 000,
max_text_chars 5000, max_batch 16). Bodies that httpx would refuse to build (NaN, a lone
surrogate, chunked uploads) are written by hand.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def port_of(server) -> int:
    return int(urlsplit(server.url).port)  # type: ignore[arg-type]


def post_raw(server, path: str, body: bytes, *, token: bool = True) -> httpx.Response:
    """POST bytes as they are (json.dumps with NaN/Infinity, escapes of lone surrogates)."""
    headers = {"Content-Type": "application/json", **(server.auth if token else {})}
    return httpx.post(server.url + path, content=body, headers=headers, timeout=60)


def stream_chunked(server, path: str, total: int, *, piece: int = 64 * 1024) -> tuple[int, bytes, int]:
    """Send a ``total``-byte JSON body with ``Transfer-Encoding: chunked`` (no Content-Length),
    stopping as soon as the server answers or drops the connection. Returns the status, the
    response body and how many body bytes went out before the answer."""
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=60)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    prefix, suffix = b'{"a": {"id": "', b'"}, "b": {"id": "y"}, "mode": "upper"}'

    def pieces():
        yield prefix
        left = total - len(prefix) - len(suffix)
        while left > 0:
            yield b"x" * min(piece, left)
            left -= piece
        yield suffix

    sent = 0
    try:
        sock.sendall(head.encode())
        for data in pieces():
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop uploading
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            sent += len(data)
        else:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # reset by the server after its answer: the answer is still in our buffer
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    sock.close()
    return resp.status, body, sent


def test_chunked_body_over_the_limit_is_refused_while_it_streams(server) -> None:
    """A 60 MB body without Content-Length: 413 after a small part of it, nothing echoed."""
    total = 60_000_000
    t0 = time.monotonic()
    status, body, sent = stream_chunked(server, "/v1/distance", total)
    assert status == 413, body[:300]
    assert b"max_body_bytes" in body and len(body) < 200 and b"xxxxxxxxxx" not in body
    # The answer came long before the upload could finish (the limit is 200 000 bytes;
    # what went out beyond it sat in socket buffers when the answer arrived).
    assert sent < total // 4, f"{sent} of {total} bytes went out before the 413"
    assert time.monotonic() - t0 < 30
    assert httpx.get(f"{server.url}/v1/health").status_code == 200  # the server is fine


def test_chunked_body_under_the_limit_is_served(server, doc_ids) -> None:
    body = json.dumps({"a": {"id": doc_ids[0]}, "b": {"id": doc_ids[1]}, "mode": "upper"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=60)
    conn.putrequest("POST", "/v1/distance")
    conn.putheader("Authorization", f"Bearer {server.token}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for i in range(0, len(body), 7):  # many small chunks
        piece = body[i : i + 7]
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    got = json.loads(r.read())
    assert r.status == 200 and got["converged"] and got["distance"] > 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize(("path", "template"), [
    ("/v1/neighbours", '{"query": {"id": "x"}, "k": %s}'),
    ("/v1/neighbours", '{"query": {"id": "x"}, "candidates": %s}'),
    ("/v1/path", '{"a": "x", "b": "y", "n_points": %s}'),
])
def test_non_finite_numbers_get_422(server, path, template, literal) -> None:
    r = post_raw(server, path, (template % literal).encode())
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "finite number" in detail, detail
    assert r.json()["errors"][0]["type"] == "finite_number"


def test_huge_integer_is_refused_without_echoing_it(server) -> None:
    r = post_raw(server, "/v1/neighbours", b'{"query": {"id": "x"}, "k": 1' + b"0" * 500 + b"}")
    assert r.status_code == 422 and "max_k" in r.text and len(r.content) < 300, r.text[:500]
    # Past 4300 digits Python's JSON reader itself refuses the number (int_max_str_digits).
    r = post_raw(server, "/v1/neighbours", b'{"query": {"id": "x"}, "k": 1' + b"0" * 5000 + b"}")
    assert r.status_code == 400 and len(r.content) < 300, r.text[:500]


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/v1/neighbours", '{"query": {"id": "ab\\ud800"}, "k": 3}', "query.id"),
    ("/v1/neighbours", '{"query": {"text": "\\udfff tail"}, "k": 3}', "query.text"),
    ("/v1/distance", '{"a": {"id": "x"}, "b": {"text": "\\ud800"}}', "b.text"),
    ("/v1/distances", '{"pairs": [[{"id": "x"}, {"text": "ok"}], [{"id": "\\ud83d"}, {"id": "y"}]]}', "pairs.1.0.id"),
    ("/v1/embed", '{"texts": ["fine", "bad \\ud800 text"]}', "texts.1"),
    ("/v1/path", '{"a": "\\ud800", "b": "y"}', "a"),
])
def test_lone_surrogates_get_422_that_encodes(server, path, body, where) -> None:
    r = post_raw(server, path, body.encode())
    assert r.status_code == 422, r.text
    r.content.decode("utf-8")  # strict UTF-8: the message could be encoded
    detail = r.json()["detail"]
    assert detail.startswith(f"{where}: not valid Unicode: lone surrogate U+D"), detail


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/distance", {"a": {"id": "q" * 2000}, "b": {"id": "y"}, "mode": "upper"}),  # 404
    ("/v1/distance", {"a": {"id": "q" * 150_000}, "b": {"id": "y"}}),  # 422: id too long
    ("/v1/embed", {"texts": "q" * 150_000}),  # 422: a string, not a list
    ("/v1/neighbours", {"query": {"id": "x"}, "k": "q" * 150_000}),  # 422: not an integer
    ("/v1/neighbours", {"query": {"id": "x"}, "q" * 150_000: 1}),  # 422: unknown field
    ("/v1/embed", {"texts": ["q" * 150_000]}),  # 413: text too long
    ("/v1/path", {"a": "q" * 1500, "b": "y"}),  # 404
])
def test_errors_echo_a_short_prefix_at_most(server, path, body) -> None:
    r = httpx.post(server.url + path, json=body, headers=server.auth, timeout=60)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert len(r.content) < 1000, r.text[:1000]
    assert "q" * 100 not in r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_bad_json_gets_a_readable_422(server) -> None:
    r = post_raw(server, "/v1/distance", b'{"a": ')
    assert r.status_code == 422 and r.json()["detail"].startswith("body is not valid JSON"), r.text


# -- which endpoints need the token: docs/service.md says, the server does -----------------


def documented_endpoints() -> list[tuple[str, str, bool]]:
    """(method, path, needs token) from the endpoint table of docs/service.md."""
    rows = []
    for line in (ROOT / "docs" / "service.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in ("GET", "POST") and cells[2] in ("yes", "no"):
            for path in re.findall(r"`([^`]+)`", cells[1]):
                rows.append((cells[0], path, cells[2] == "yes"))
    return rows


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_token_table_in_the_docs_matches_the_server(server, doc_ids) -> None:
    rows = documented_endpoints()
    assert len(rows) >= 12, rows
    # Every route of the app is in the table (a new endpoint must say whether it needs the token).
    routes = {_shape(getattr(r, "path", "")) for r in server.app.routes}  # type: ignore[attr-defined]
    documented = {_shape(p).removesuffix("/...") for _, p, _ in rows}
    assert routes <= documented, routes - documented
    for method, path, needs in rows:
        url = server.url + path.replace("{id}", doc_ids[0]).replace("/...", "/swagger-ui.css")
        r = httpx.request(method, url, json={} if method == "POST" else None, timeout=60)
        if needs:
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
        else:
            assert r.status_code == 200, (method, path, r.status_code, r.text[:200])
