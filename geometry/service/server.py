"""HTTP API over a finished run (FastAPI + uvicorn).

    ccpipe-geometry serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--token-env CCPIPE_API_TOKEN]

Endpoints (API docs at /docs and /redoc, offline; schema at /openapi.json; every /v1
endpoint but /v1/health needs the token when one is set):

    GET  /v1/health                 liveness, run size, lambda, limits (no token needed)
    GET  /v1/documents/{id}         a document's parquet row (?text=true adds raw_content)
    POST /v1/distance               distance between two documents or texts
    POST /v1/distances              many pairs in one call
    POST /v1/neighbours             k nearest documents by Stein distance (ANN + re-rank)
    POST /v1/path                   geodesic between two documents and the documents along it
    POST /v1/embed                  embeddings of texts
    GET  /v1/stats                  micro-batching counters

Every distance says which ``mode`` computed it and whether it ``converged``.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline

from geometry.api import MODES, GeometryIndex, QueryConfig
from geometry.embed import MODEL_NAME
from geometry.errors import GeometryError, StoreError, UnknownDocumentError, clip
from geometry.service import schemas as S
from geometry.service.config import ServiceConfig
from geometry.service.engine import QueryEngine, finite_or_none, label

log = logging.getLogger(__name__)

API_VERSION = "1"


class _BodyTooLarge(Exception):
    """Raised inside ``receive`` once a streamed body passes the limit."""


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, whichever way it is sent.

    A ``Content-Length`` over the limit is refused before anything is read (uvicorn then
    discards the declared bytes as they arrive, so a client that sends its whole body
    before reading still gets the 413). A body without one (``Transfer-Encoding:
    chunked``, of no announced end) is counted as it streams in and refused as soon as the
    count passes the limit: the app's own answer to the cut-off body is dropped, and the
    413 goes out with ``Connection: close``, so the rest of the upload is never read.
    Either way the server never holds more than ``max_bytes`` of one body. Plain ASGI,
    without the extra task and stream per request that Starlette's ``@app.middleware`` adds.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope, receive, send, *, close: bool) -> None:
        resp = JSONResponse({"detail": f"request body over {self.max_bytes} bytes (max_body_bytes)"}, status_code=413,
                            headers={"connection": "close"} if close else None)
        await resp(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if size is not None and (not size.isdigit() or int(size) > self.max_bytes):
            await self._refuse(scope, receive, send, close=False)
            return
        seen = 0
        over = answered = False

        async def counted_receive():
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _BodyTooLarge
            return msg

        async def guarded_send(msg) -> None:
            nonlocal answered
            if over:
                return  # the app's answer to a truncated body; the 413 replaces it
            answered = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await self._refuse(scope, receive, send, close=True)


def create_app(index: GeometryIndex, config: ServiceConfig, *, warm_up: bool = True) -> FastAPI:
    """The app over an opened index; models are loaded (and warmed up) once, at startup."""
    engine = QueryEngine(index, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_up:
            engine.warm_up()
        engine.start()
        log.info("serving %s: %d documents", index.run_dir, index.store.count)
        yield
        await engine.stop()

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts and styles from the
    # fastapi-offline package's own copies, not from a CDN, so they work with no internet.
    app = FastAPIOffline(
        title="ccpipe geometry service",
        version=API_VERSION,
        description="Stein-metric distances, neighbours and paths between the documents of one ccpipe run. "
        "Every endpoint under /v1 except /v1/health needs 'Authorization: Bearer <token>' when the server has a token.",
        lifespan=lifespan,
        responses={413: {"model": S.ErrorBody, "description": "Body or text over a size limit"},
                   422: {"model": S.ValidationErrorBody, "description": "Request does not fit the schema or a limit"}},
    )
    app.state.engine = engine
    bearer = HTTPBearer(auto_error=False, description="Required when the server was started with a token")

    # async: a plain ``def`` dependency runs on Starlette's thread pool, a thread hop per
    # request for one string comparison.
    async def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if config.token is None:
            return
        # compare_digest: the time taken must not tell how much of a guess was right.
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), config.token.encode()):
            raise HTTPException(401, "missing or wrong API token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    # Every route but /v1/health, /docs, /redoc and /openapi.json (docs/service.md, "Token").
    authed = {"dependencies": [Depends(auth)], "responses": {401: {"model": S.ErrorBody, "description": "Missing or wrong API token"}}}

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(e.errors()), status_code=422)

    @app.exception_handler(UnknownDocumentError)
    async def _unknown(_: Request, e: UnknownDocumentError) -> JSONResponse:
        what = f"document {clip(e.doc_id)}" if e.doc_id is not None else "a document"
        return JSONResponse({"detail": f"{what} is not in this run's embedding store"}, status_code=404)

    @app.exception_handler(StoreError)
    async def _store(_: Request, e: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(GeometryError)
    async def _geometry(_: Request, e: GeometryError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    def check_text(text: str | None, where: str) -> None:
        if text is not None and len(text) > config.max_text_chars:
            raise HTTPException(413, f"{where}: text of {len(text)} characters is over the limit of {config.max_text_chars} (max_text_chars)")

    def check_batch(n: int, what: str) -> None:
        if n > config.max_batch:
            raise HTTPException(422, f"{n} {what} is over the limit of {config.max_batch} per request (max_batch)")

    @app.get("/v1/health", response_model=S.Health, tags=["meta"])
    async def health() -> S.Health:
        meta = index.score_meta
        return S.Health(
            status="ok",
            run=str(index.run_dir),
            documents=index.store.count,
            dim=index.store.dim,
            lam=index.lam,
            c=index.config.c,
            sphere=index.metric.sphere,
            modes=list(MODES),
            score_model={k: meta[k] for k in ("step", "val_loss", "epoch") if k in meta and _json_num(meta[k])},
            limits=config.limits(),
            batching={"score_window_ms": config.distance_batch.window_ms, "score_max_items": config.distance_batch.max_items,
                      "score_max_pairs": config.distance_batch.max_weight or 0,
                      "embed_window_ms": config.embed_batch.window_ms, "embed_max_items": config.embed_batch.max_items},
        )

    @app.get("/v1/stats", **authed, tags=["meta"])
    async def stats() -> dict:
        return {"score": engine.score_batcher.stats.to_dict(), "embed": engine.embed_batcher.stats.to_dict()}

    @app.get("/v1/documents/{doc_id:path}", response_model=S.Document, **authed, tags=["documents"])
    async def document(doc_id: str, text: bool = Query(False, description="include raw_content")) -> S.Document:
        partition, row = engine.document(doc_id, with_text=text)
        return S.Document(id=doc_id, partition=partition, fields=row)

    async def measure(pairs: list[tuple[S.DocRef, S.DocRef]], mode: str) -> S.DistancesResponse:
        for i, (a, b) in enumerate(pairs):
            check_text(a.text, f"pair {i} a")
            check_text(b.text, f"pair {i} b")
        res = await engine.distances([a.id for a, _ in pairs], [a.text for a, _ in pairs], [b.id for _, b in pairs], [b.text for _, b in pairs], mode)
        results = [
            S.DistanceResult(a=label(a.id, a.text), b=label(b.id, b.text), distance=finite_or_none(d), converged=c and math.isfinite(d), energy=finite_or_none(e), mode=mode)  # type: ignore[arg-type]
            for (a, b), d, c, e in zip(pairs, res.distance, res.converged, res.energy)
        ]
        return S.DistancesResponse(mode=mode, lam=index.lam, c=index.config.c, converged=all(r.converged for r in results), results=results)  # type: ignore[arg-type]

    @app.post("/v1/distance", response_model=S.DistanceResult, **authed, tags=["queries"])
    async def distance(req: S.DistanceRequest) -> S.DistanceResult:
        return (await measure([(req.a, req.b)], req.mode)).results[0]

    @app.post("/v1/distances", response_model=S.DistancesResponse, **authed, tags=["queries"])
    async def distances(req: S.DistancesRequest) -> S.DistancesResponse:
        check_batch(len(req.pairs), "pairs")
        return await measure(req.pairs, req.mode)

    @app.post("/v1/neighbours", response_model=S.NeighboursResponse, **authed, tags=["queries"])
    async def neighbours(req: S.NeighboursRequest) -> S.NeighboursResponse:
        if req.k > config.max_k:
            raise HTTPException(422, f"k = {clip(req.k)} is over the limit of {config.max_k} (max_k)")
        cand = req.candidates if req.candidates is not None else index.config.candidates
        if cand > config.max_candidates:
            raise HTTPException(422, f"candidates = {clip(cand)} is over the limit of {config.max_candidates} (max_candidates)")
        check_text(req.query.text, "query")
        rows = await engine.neighbours(req.query.id, req.query.text, req.k, req.mode, max(cand, req.k))
        nbs = [S.Neighbour(id=r["id"], distance=finite_or_none(r["distance"]), converged=r["converged"] and math.isfinite(r["distance"]),
                           energy=finite_or_none(r["energy"]), cosine=r["cosine"] if math.isfinite(r["cosine"]) else 0.0) for r in rows]
        return S.NeighboursResponse(query=label(req.query.id, req.query.text), mode=req.mode, k=req.k, candidates=max(cand, req.k),
                                    lam=index.lam, converged=all(n.converged for n in nbs), neighbours=nbs)

    @app.post("/v1/path", response_model=S.PathResponse, **authed, tags=["queries"])
    async def path(req: S.PathRequest) -> S.PathResponse:
        if req.n_points is not None and req.n_points > config.max_path_points:
            raise HTTPException(422, f"n_points = {clip(req.n_points)} is over the limit of {config.max_path_points} (max_path_points)")
        p = await engine.path(req.a, req.b, req.n_points)
        docs: list[S.PathDocument] = []
        for i, (doc_id, cos) in enumerate(p.nearest):
            if not doc_id:
                continue
            if docs and docs[-1].id == doc_id:  # consecutive points near one document: one entry
                docs[-1].points.append(i)
                docs[-1].cosine = max(docs[-1].cosine, cos)
                continue
            _, row = engine.document(doc_id, with_text=False)
            docs.append(S.PathDocument(id=doc_id, points=[i], cosine=cos, title=row.get("title"), url=row.get("url")))
        return S.PathResponse(a=req.a, b=req.b, distance=finite_or_none(p.distance), converged=p.converged and math.isfinite(p.distance),
                              energy=finite_or_none(p.energy), lam=index.lam, n_points=len(p.nearest), documents=docs)

    @app.post("/v1/embed", response_model=S.EmbedResponse, **authed, tags=["queries"])
    async def embed(req: S.EmbedRequest) -> S.EmbedResponse:
        check_batch(len(req.texts), "texts")
        for i, t in enumerate(req.texts):
            check_text(t, f"texts[{i}]")
        vecs = await engine.embed(req.texts)
        policy = index.store.meta.get("long_policy", "truncate")
        return S.EmbedResponse(model=str(index.store.meta.get("model", MODEL_NAME)), mode=str(policy), dim=int(vecs.shape[1]), vectors=vecs.tolist())

    return app

def validation_body(errors: Sequence[dict]) -> dict:
    """The 422 body: one readable line and the list of problems, built only from strings
    that encode (pydantic's own error list can hold NaN, which JSON cannot carry, or a lone
    surrogate, which UTF-8 cannot), quoting at most a short prefix of any input."""
    items, parts = [], []
    for err in errors[:20]:
        loc = [x if isinstance(x, int) else _printable(str(x), 40) for x in err.get("loc", ())]
        msg = _printable(str(err.get("msg", "invalid")).removeprefix("Value error, "))
        if err.get("type") == "json_invalid":  # loc is ("body", character offset)
            reason = (err.get("ctx") or {}).get("error", "")
            items.append({"loc": loc, "msg": msg, "type": "json_invalid"})
            parts.append(f"body is not valid JSON: {_printable(str(reason))} at character {loc[-1]}")
            continue
        items.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
        path = [str(x) for x in (loc[1:] if len(loc) > 1 and loc[0] == "body" else loc)]  # ["body", "query", "k"] -> query.k
        where = ".".join(path)
        got = err.get("input")
        shown = f" (got {clip(got, 40)})" if isinstance(got, (str, int, float)) and not isinstance(got, bool) else ""
        parts.append(f"{where or 'request'}: {msg}{shown}")
    if len(errors) > 20:
        parts.append(f"... and {len(errors) - 20} more")
    return {"detail": "; ".join(parts), "errors": items}


def _printable(s: str, limit: int = 200) -> str:
    """An error string that encodes as UTF-8 and stays short."""
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[:limit] + "..."


def _json_num(v: object) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def open_app(run_dir: str | Path, config: ServiceConfig, query: QueryConfig | None = None, *, device: str | None = None, warm_up: bool = True) -> FastAPI:
    """Open the run (store, index, score model) and build the app over it."""
    gi = GeometryIndex.open(run_dir, query, device=device)
    return create_app(gi, config, warm_up=warm_up)


def serve(run_dir: str | Path, config: ServiceConfig, query: QueryConfig | None = None, *, device: str | None = None) -> None:
    """Load everything once and serve until interrupted (one process: the models are shared
    by every request through the batchers, which is what makes batching pay)."""
    import uvicorn

    app = open_app(run_dir, config, query, device=device)
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        log.warning("listening on %s without an API token: anyone who can reach it can query the run", config.host)
    log.info("service config: %s", {k: v for k, v in asdict(config).items() if k != "token"})
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False, timeout_keep_alive=int(config.keep_alive_s))
