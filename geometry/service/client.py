"""Python and command-line client of the query service (httpx).

    ccpipe-geometry client [--url http://127.0.0.1:8000] [--token-env CCPIPE_API_TOKEN] COMMAND ...

    health
    document ID [--text]
    distance A B [--mode geodesic|upper|graph] [--text-a] [--text-b]
    neighbours ID_OR_TEXT [-k 10] [--mode upper] [--candidates 100] [--text]
    path A B [--points 16]
    embed TEXT [TEXT ...]

Answers are the server's JSON on stdout; exit status 0 on success, 2 on an error the server
or the connection reported (its message on stderr), 3 when a distance did not converge.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import httpx

from geometry.cli_args import integer, number

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_ERROR = 2
EXIT_NOT_CONVERGED = 3


class ServiceError(Exception):
    """The server answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def ref(value: str, *, text: bool = False) -> dict[str, str]:
    """A document reference: an id, or a raw text to embed on the fly."""
    return {"text": value} if text else {"id": value}


class GeometryClient:
    """Thin typed wrapper over the HTTP API; one connection pool per client."""

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> "GeometryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServiceError(r.status_code, detail)
        return r.json()

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def stats(self) -> dict:
        return self._call("GET", "/v1/stats")

    def document(self, doc_id: str, *, text: bool = False) -> dict:
        return self._call("GET", f"/v1/documents/{httpx.URL(path=doc_id).raw_path.decode()}", params={"text": str(text).lower()})

    def distance(self, a: dict, b: dict, mode: str = "geodesic") -> dict:
        return self._call("POST", "/v1/distance", json={"a": a, "b": b, "mode": mode})

    def distances(self, pairs: list[tuple[dict, dict]], mode: str = "geodesic") -> dict:
        return self._call("POST", "/v1/distances", json={"pairs": [list(p) for p in pairs], "mode": mode})

    def neighbours(self, query: dict, k: int = 10, *, mode: str = "upper", candidates: int | None = None) -> dict:
        body: dict[str, Any] = {"query": query, "k": k, "mode": mode}
        if candidates is not None:
            body["candidates"] = candidates
        return self._call("POST", "/v1/neighbours", json=body)

    def path(self, a: str, b: str, *, n_points: int | None = None) -> dict:
        body: dict[str, Any] = {"a": a, "b": b}
        if n_points is not None:
            body["n_points"] = n_points
        return self._call("POST", "/v1/path", json=body)

    def embed(self, texts: list[str]) -> dict:
        return self._call("POST", "/v1/embed", json={"texts": texts})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("CCPIPE_API_URL", DEFAULT_URL), help=f"service URL (default $CCPIPE_API_URL or {DEFAULT_URL})")
    p.add_argument("--token-env", default="CCPIPE_API_TOKEN", help="environment variable holding the API token (default CCPIPE_API_TOKEN)")
    p.add_argument("--timeout", type=number(0, above=True), default=60.0, help="seconds per request (default 60)")
    sub = p.add_subparsers(dest="client_cmd", required=True)
    sub.add_parser("health", help="server status")
    d = sub.add_parser("document", help="a document's stored fields")
    d.add_argument("id")
    d.add_argument("--text", action="store_true", help="include raw_content")
    di = sub.add_parser("distance", help="distance between two documents or texts")
    di.add_argument("a")
    di.add_argument("b")
    di.add_argument("--mode", choices=["geodesic", "upper", "graph"], default="geodesic")
    di.add_argument("--text-a", action="store_true", help="A is a raw text, not an id")
    di.add_argument("--text-b", action="store_true", help="B is a raw text, not an id")
    n = sub.add_parser("neighbours", aliases=["neighbors"], help="k nearest documents by Stein distance")
    n.add_argument("query")
    n.add_argument("-k", type=integer(1), default=10)
    n.add_argument("--mode", choices=["geodesic", "upper", "graph"], default="upper")
    n.add_argument("--candidates", type=integer(1), default=None)
    n.add_argument("--text", action="store_true", help="QUERY is a raw text, not an id")
    pa = sub.add_parser("path", help="geodesic between two documents and the documents along it")
    pa.add_argument("a")
    pa.add_argument("b")
    pa.add_argument("--points", type=integer(3), default=None)
    e = sub.add_parser("embed", help="embeddings of texts")
    e.add_argument("texts", nargs="+")


def run(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env) or None
    cmd = args.client_cmd
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    try:
        with GeometryClient(args.url, token=token, timeout=args.timeout) as c:
            if cmd == "health":
                out = c.health()
            elif cmd == "document":
                out = c.document(args.id, text=args.text)
            elif cmd == "distance":
                out = c.distance(ref(args.a, text=args.text_a), ref(args.b, text=args.text_b), args.mode)
            elif cmd in ("neighbours", "neighbors"):
                out = c.neighbours(ref(args.query, text=args.text), args.k, mode=args.mode, candidates=args.candidates)
            elif cmd == "path":
                out = c.path(args.a, args.b, n_points=args.points)
            elif cmd == "embed":
                out = c.embed(args.texts)
            else:  # argparse only lets known commands through
                raise AssertionError(cmd)
    except ServiceError as e:
        log.error("%s", e)
        return EXIT_ERROR
    except httpx.HTTPError as e:
        log.error("cannot reach %s: %s", args.url, e)
        return EXIT_ERROR
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0 if out.get("converged", True) else EXIT_NOT_CONVERGED
