"""``ccpipe-geometry serve`` and ``ccpipe-geometry client``: hooked into geometry/cli.py."""

from __future__ import annotations

import argparse
import os

from geometry.cli_args import MAX_K, device, host, integer, number
from geometry.errors import GeometryError


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="HTTP query service over a run (see docs/service.md)")
    s.add_argument("run_dir")
    s.add_argument("--host", type=host, default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    s.add_argument("--port", type=integer(0, 65535), default=8000)
    s.add_argument("--token-env", default="CCPIPE_API_TOKEN", help="environment variable holding the API token; when it is set, requests need 'Authorization: Bearer <token>'")
    s.add_argument("--max-text-chars", type=integer(1), default=None)
    s.add_argument("--max-k", type=integer(1, MAX_K), default=None)
    s.add_argument("--max-batch", type=integer(1), default=None)
    s.add_argument("--batch-window-ms", type=number(0, 10_000), default=None, help="micro-batching window of score-model calls (default 2)")
    s.add_argument("--batch-max", type=integer(1), default=None, help="requests per batched score-model call at most (1 = no batching; default 64)")
    s.add_argument("--batch-max-pairs", type=integer(1), default=None, help="pairs per batched score-model call at most (default 256)")
    s.add_argument("--c", type=number(0), default=None, help="lambda = c / median |s|^2 (default 0.3)")
    s.add_argument("--candidates", type=integer(1, MAX_K), default=None, help="default ANN candidates re-ranked per neighbour query (default 50)")
    s.add_argument("--device", type=device, default=None)

    from geometry.service.client import add_arguments

    add_arguments(sub.add_parser("client", help="query a running service (see docs/service.md)"))


def run(args: argparse.Namespace) -> int:
    if args.cmd == "client":
        from geometry.service.client import run as client_run

        return client_run(args)
    from dataclasses import replace

    from geometry.api import QueryConfig
    from geometry.service.config import ServiceConfig
    from geometry.service.server import serve

    token = os.environ.get(args.token_env) or None
    limits = {k: v for k, v in {"max_text_chars": args.max_text_chars, "max_k": args.max_k, "max_batch": args.max_batch}.items() if v is not None}
    batch = ServiceConfig().distance_batch
    if args.batch_window_ms is not None:
        batch = replace(batch, window_ms=args.batch_window_ms)
    if args.batch_max is not None:
        batch = replace(batch, max_items=args.batch_max)
    if args.batch_max_pairs is not None:
        batch = replace(batch, max_weight=args.batch_max_pairs)
    try:
        cfg = ServiceConfig(host=args.host, port=args.port, token=token, distance_batch=batch, **limits)
        query = QueryConfig(**{k: v for k, v in {"c": args.c, "candidates": args.candidates}.items() if v is not None})
    except ValueError as e:
        raise GeometryError(f"bad service option: {e}") from e
    serve(args.run_dir, cfg, query, device=args.device)
    return 0
