"""``ccpipe-geometry``: embed a run, train its score model, query Stein distances.

    ccpipe-geometry embed RUN_DIR [--max-tokens 256]
    ccpipe-geometry train RUN_DIR [--epochs 20] [--resume] [--skip-if-trained]
    ccpipe-geometry distance RUN_DIR ID_A ID_B [--mode geodesic|upper|graph]
    ccpipe-geometry neighbours RUN_DIR ID [-k 10] [--mode upper|geodesic|graph]
    ccpipe-geometry path RUN_DIR ID_A ID_B [--points 16]
    ccpipe-geometry ids RUN_DIR [-n 10]
    ccpipe-geometry validate RUN_DIR [--other MODEL.pt] [--json]
    ccpipe-geometry validate --synthetic vmf [--dim 384] [--json]
    ccpipe-geometry serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--token-env CCPIPE_API_TOKEN]
    ccpipe-geometry client [--url URL] health|document|distance|neighbours|path|embed ...

Answers are JSON on stdout; logs go to stderr. Exit status 0 on success, 2 on a usage or
data error (one line on stderr; option checks in geometry/cli_args.py), 3 when a distance
did not converge (the JSON still says so) or a validation missed its target, 130 when
stopped by Ctrl-C (the line says how to continue).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from dataclasses import asdict

from ccpipe import lifeline
from ccpipe.malloc import tune_malloc
from geometry.cli_args import MAX_BATCH, MAX_K, MAX_POINTS, Parser, device, integer, number
from geometry.errors import GeometryError

log = logging.getLogger("geometry.cli")

EXIT_ERROR = 2
EXIT_NOT_CONVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="ccpipe-geometry", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("embed", help="embed new documents of a run and extend the ANN index")
    e.add_argument("run_dir")
    e.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=None)
    e.add_argument("--policy", choices=["truncate", "chunk_mean"], default=None, help="long-document policy")
    e.add_argument("--device", type=device, default=None)
    e.add_argument("--max-tokens", type=integer(1, 8192), default=None, help="window in word pieces (default: the model's, 256)")
    e.add_argument("--model", choices=["auto", "minilm", "e5"], default=None, help="embedder (default auto: the store's, else minilm; e5 = multilingual, 10-50x slower)")
    e.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train the score model on the run's embeddings")
    t.add_argument("run_dir")
    t.add_argument("--epochs", type=integer(1, 1_000_000), default=None)
    t.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=None)
    t.add_argument("--lr", type=number(0, 1, above=True), default=None)
    t.add_argument("--hidden", type=integer(1, 16_384), default=None)
    t.add_argument("--blocks", type=integer(0, 64), default=None)
    t.add_argument("--sigma-min", type=number(0, above=True), default=None)
    t.add_argument("--seed", type=integer(0, 2**32 - 1), default=None)
    t.add_argument("--device", type=device, default=None)
    t.add_argument("--resume", action="store_true", help="continue from _geometry/score/last.pt")
    t.add_argument("--skip-if-trained", action="store_true", help="do nothing when model.pt was trained on every stored embedding (make demo)")

    def query(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--c", type=number(0), default=None, help="lambda = c / median |s|^2 (default 0.3, docs/geometry.md)")
        sp.add_argument("--points", type=integer(3, MAX_POINTS), default=None, help=f"points on a geodesic, 3 to {MAX_POINTS} (default 32)")
        sp.add_argument("--device", type=device, default=None)
        sp.add_argument("--dtype", choices=["float64", "float32"], default=None, help="curve precision (float32: ~4.7x faster geodesics)")

    d = sub.add_parser("distance", help="Stein distance between two documents")
    d.add_argument("run_dir")
    d.add_argument("id_a")
    d.add_argument("id_b")
    d.add_argument("--mode", choices=["geodesic", "upper", "graph"], default="geodesic")
    query(d)

    n = sub.add_parser("neighbours", aliases=["neighbors"], help="k nearest documents by Stein distance")
    n.add_argument("run_dir")
    n.add_argument("id")
    n.add_argument("-k", type=integer(1, MAX_K), default=10)
    n.add_argument("--mode", choices=["geodesic", "upper", "graph"], default="upper")
    n.add_argument("--candidates", type=integer(1, MAX_K), default=None, help="ANN candidates to re-rank (default 50)")
    query(n)

    pa = sub.add_parser("path", help="geodesic between two documents and the documents along it")
    pa.add_argument("run_dir")
    pa.add_argument("id_a")
    pa.add_argument("id_b")
    query(pa)

    ids = sub.add_parser("ids", help="print stored document ids, one per line (to pick documents to query)")
    ids.add_argument("run_dir")
    ids.add_argument("-n", type=integer(1, 10_000_000), default=10, help="how many (default 10), in store order")
    ids.add_argument("--language", default=None, help="only documents of this language's shards (e.g. en)")

    v = sub.add_parser("validate", help="is the score right where the metric reads it; what the metric adds (docs/geometry.md)")
    v.add_argument("run_dir", nargs="?", help="a trained run (omit with --synthetic)")
    v.add_argument("--synthetic", choices=["vmf"], default=None, help="train on a vMF mixture with an exact score and measure against it")
    v.add_argument("--dim", type=integer(2, 4096), default=384, help="--synthetic: dimension (default 384, the embedding's)")
    v.add_argument("--n", type=integer(100, 10_000_000), default=20_000, help="--synthetic: training samples (default 20000)")
    v.add_argument("--epochs", type=integer(1, 1_000_000), default=8, help="--synthetic: epochs (default 8)")
    v.add_argument("--clusters", type=integer(1, 100_000), default=32, help="--synthetic: vMF components (default 32)")
    v.add_argument("--kappa", type=number(0, above=True), default=300.0, help="--synthetic: vMF concentration (default 300)")
    v.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    v.add_argument("--other", default=None, help="a second model.pt (another seed) for seed stability")
    v.add_argument("--c", type=number(0), default=0.3, help="lambda = c / median |s|^2 for the stretch figures (default 0.3, the query default)")
    v.add_argument("--pairs", type=integer(1, 10_000_000), default=1000, help="pairs sampled for the stretch figures (default 1000)")
    v.add_argument("--json", action="store_true", help="print one JSON object (default: a readable summary)")

    from geometry.service.cli import add_commands  # serve, client (docs/service.md)

    add_commands(sub)
    return p


def _validate(args: argparse.Namespace) -> int:
    from geometry import validate as val

    if args.synthetic:
        if args.run_dir:
            raise GeometryError("give either RUN_DIR or --synthetic, not both")
        rep = val.validate_synthetic(dim=args.dim, clusters=args.clusters, kappa=args.kappa, n=args.n, epochs=args.epochs, seed=args.seed)
        ok = rep["tangential_rel_err_clean"] <= rep["targets"]["tangential_rel_err_clean"] and rep["tangential_rel_err_arcs"] <= rep["targets"]["tangential_rel_err_arcs"]
    else:
        if not args.run_dir:
            raise GeometryError("validate needs RUN_DIR (a trained run) or --synthetic vmf")
        rep = val.validate_run(args.run_dir, other=args.other, c=args.c, n_pairs=args.pairs, seed=args.seed)
        ok = rep["heldout_loss_at_or_below_gaussian_every_rung"]
    if args.json:
        _emit(rep)
    else:
        sys.stdout.write(val.summary(rep) + "\n")
    return 0 if ok else EXIT_NOT_CONVERGED


def _set(obj, **kw):
    """A copy of a frozen config with only the options the user gave."""
    from dataclasses import replace

    given = {k: v for k, v in kw.items() if v is not None}
    try:
        return replace(obj, **given) if given else obj
    except ValueError as e:  # a combination the per-option checks cannot see
        raise GeometryError(f"bad option: {e}") from e


def _open_index(args: argparse.Namespace):
    from geometry.api import GeometryIndex, QueryConfig
    from geometry.distances import GeodesicConfig

    cfg = _set(QueryConfig(), c=args.c, dtype=args.dtype)
    if args.points is not None:
        cfg = _set(cfg, geodesic=_set(GeodesicConfig(), n_points=args.points))
    return GeometryIndex.open(args.run_dir, cfg, device=args.device)


def _check_writable(folder) -> None:
    """Raise OSError now if ``folder`` cannot be created or written (torch.save would only
    fail at the first checkpoint, with a RuntimeError)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from e


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.cmd in ("serve", "client"):
        from geometry.service.cli import run as service_run

        return service_run(args)
    if args.cmd == "validate":
        return _validate(args)
    if args.cmd == "ids":
        from geometry.store import EmbeddingStore

        store = EmbeddingStore.open(args.run_dir)
        if args.language is None:
            chosen = list(store.ids()[: args.n])
        else:
            from ccpipe.io.dataset import partition_values

            chosen = [i for i, sh in zip(store.ids(), store.shards()) if partition_values(Path(sh)).get("language") == args.language][: args.n]
        sys.stdout.write("".join(f"{i}\n" for i in chosen))
        return 0
    if args.cmd == "embed":
        from geometry.embed import EmbedConfig, embed_run
        from geometry.index import build_index

        cfg = _set(EmbedConfig(), batch_size=args.batch_size, long_policy=args.policy, device=args.device, max_tokens=args.max_tokens, model=args.model)
        if args.no_progress:
            cfg = _set(cfg, progress=False)
        counts = embed_run(args.run_dir, cfg)
        counts.update(build_index(args.run_dir))
        _emit(counts)
        return 0
    if args.cmd == "train":
        from geometry.score_model import ScoreModelConfig  # noqa: F401  (documents the fields)
        from geometry.store import EmbeddingStore, geometry_dir
        from geometry.train import TrainConfig, default_model_config, train_score_model

        store = EmbeddingStore.open(args.run_dir)
        if args.skip_if_trained:
            from geometry.api import has_score_model, score_model_report

            if has_score_model(args.run_dir):
                rep = score_model_report(args.run_dir)
                if (rep["n_train"] or 0) + (rep["n_val"] or 0) == store.count:
                    _emit({"checkpoint": str(geometry_dir(args.run_dir) / "score" / "model.pt"), "skipped": "already trained on all stored embeddings",
                           "metric_sigma": rep["metric_sigma"], "metric_sigma_confirmed": rep["metric_sigma_confirmed"]})
                    return 0
        _check_writable(geometry_dir(args.run_dir) / "score")  # before training, not at its first checkpoint
        data = store.tensor()  # N x d view of the memory map; batches are gathered from it
        tcfg = _set(TrainConfig(), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
        overrides = {k: v for k, v in {"hidden": args.hidden, "blocks": args.blocks, "sigma_min": args.sigma_min}.items() if v is not None}
        try:
            model = default_model_config(data, seed=tcfg.seed, **overrides)
        except ValueError as e:  # e.g. --sigma-min above the data's diameter
            raise GeometryError(f"bad option: {e}") from e
        tcfg = _set(tcfg, model=model)
        res = train_score_model(data, tcfg, out_dir=geometry_dir(args.run_dir) / "score", resume=args.resume)
        v = res.validation or {}
        _emit({"checkpoint": str(res.checkpoint), "val_loss": res.val_loss, "metric_sigma": v.get("metric_sigma"),
               "metric_sigma_confirmed": v.get("metric_sigma_confirmed"), "epochs": res.history[-1:] and res.history[-1]})
        return 0
    gi = _open_index(args)
    if args.cmd == "distance":
        r = gi.distance(args.id_a, args.id_b, mode=args.mode)
        _emit({**asdict(r), "stretch_over_arc": r.distance / r.arc if r.arc > 0 else None, "lam": gi.lam, "c": gi.config.c})
        return 0 if r.converged else EXIT_NOT_CONVERGED
    if args.cmd in ("neighbours", "neighbors"):
        res = gi.neighbours(args.id, args.k, mode=args.mode, candidates=args.candidates)
        _emit({"id": args.id, "mode": args.mode, "lam": gi.lam, "neighbours": [asdict(x) for x in res]})
        return 0 if all(x.converged for x in res) else EXIT_NOT_CONVERGED
    if args.cmd == "path":
        p = gi.path(args.id_a, args.id_b)
        _emit({**p.to_dict(), "lam": gi.lam})
        return 0 if p.converged else EXIT_NOT_CONVERGED
    raise AssertionError(args.cmd)  # argparse only lets known commands through


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    tune_malloc()  # torch temporaries reused instead of re-faulted (ccpipe/malloc.py)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every SIMD probe
    lifeline.stop_on_sigterm()
    try:
        return run(args)
    except GeometryError as e:
        log.error("%s", e)
        return EXIT_ERROR
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (lifeline.Terminated: exit 143)
        log.debug("interrupted", exc_info=True)
        if isinstance(e, lifeline.Terminated):
            log.error("%s", _interrupted(args, argv).replace("(Ctrl-C)", "(SIGTERM)"))
            return lifeline.interrupt_words(e)[1]
        log.error("%s", _interrupted(args, argv))
        return EXIT_INTERRUPTED
    except OSError as e:  # an unwritable or full run directory, a vanished file
        log.debug("OS error", exc_info=True)
        where = f"{e.filename}: " if e.filename else ""
        hint = " (embed and train write under RUN_DIR/_geometry: is it writable, is there space?)" if args.cmd in ("embed", "train") else ""
        log.error("%s %s%s%s", args.cmd, where, e.strerror or e, hint)
        return EXIT_ERROR


def _interrupted(args: argparse.Namespace, argv: list[str] | None) -> str:
    """One line: what stopped, what was kept, the command that continues."""
    from geometry.cli_args import resume_hint

    if args.cmd == "embed":
        return f"embed stopped (Ctrl-C); documents already committed are kept; to embed the rest run the same command: {resume_hint(args.cmd, argv)}"
    if args.cmd == "train":
        from geometry.store import geometry_dir

        last = geometry_dir(args.run_dir) / "score" / "last.pt"
        if last.exists():
            return f"train stopped (Ctrl-C); the last checkpoint is {last}; to continue from it run: {resume_hint(args.cmd, argv)}"
        return "train stopped (Ctrl-C) before its first checkpoint; run the same command to start again"
    return f"{args.cmd} stopped (Ctrl-C)"


if __name__ == "__main__":
    sys.exit(main())
