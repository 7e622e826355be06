"""``ccpipe``: the command line. Subcommands stay thin; the work lives in modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from ccpipe import lifeline
from ccpipe.errors import CcpipeError

log = logging.getLogger("ccpipe")

# name -> (add_arguments, handler); other modules register subcommands here
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def deco(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (add_args, fn)
        return fn

    return deco


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*",
                   help="WET or WARC files (told apart by content), globs, directories or https:// / s3:// URLs")
    p.add_argument("-c", "--config", help="YAML config (see configs/); defaults apply otherwise")
    p.add_argument("-o", "--out", help="output run directory (output.dir)")
    p.add_argument("-w", "--workers", type=int, help="worker processes (executor.workers)")
    p.add_argument("--executor", choices=["local", "ray"], help="executor.kind")
    p.add_argument("--ray-address", help="existing Ray cluster address (executor.ray_address)")
    p.add_argument("--crawl", help="Common Crawl snapshot id, e.g. CC-MAIN-2024-22 (input.crawl)")
    p.add_argument("--segments", help="lines of the crawl's wet.paths.gz, e.g. 0-9 (input.segments)")
    p.add_argument("--crawl-files", choices=["wet", "warc"],
                   help="with --crawl: read its WET files (default) or its WARC files (input.crawl_files)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the scratch directory <out>/_work after success (output.keep_work)")
    p.add_argument("--restart-if-changed", action="store_true",
                   help="if --out holds a run of another config or input, delete it and start over "
                        "(default: refuse); a run of the same config still resumes")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set dedup.group_size=10 (repeatable)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ccpipe.config import parse_override

    o: dict[str, Any] = {}
    if args.inputs:
        o["input.paths"] = list(args.inputs)
    for flag, key in (
        ("out", "output.dir"),
        ("workers", "executor.workers"),
        ("executor", "executor.kind"),
        ("ray_address", "executor.ray_address"),
        ("crawl", "input.crawl"),
        ("segments", "input.segments"),
        ("crawl_files", "input.crawl_files"),
    ):
        v = getattr(args, flag, None)
        if v is not None:
            o[key] = v
    if args.no_progress:
        o["executor.progress"] = False
    if args.keep_work:
        o["output.keep_work"] = True
    for item in args.set:
        k, v = parse_override(item)
        o[k] = v
    return o


@command("run", _run_args)
def _run(args: argparse.Namespace) -> int:
    """Run (or resume) the pipeline on WET or WARC input."""
    from ccpipe.config import load_config
    from ccpipe.pipeline import run_pipeline

    cfg = load_config(args.config, _overrides(args))
    stats = run_pipeline(cfg, restart_if_changed=args.restart_if_changed)
    print(summary(stats, Path(cfg.output.dir)))
    return 0


def _stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="an output directory of `ccpipe run`")
    p.add_argument("--json", action="store_true", help="print the merged stats as JSON")


@command("stats", _stats_args)
def _stats(args: argparse.Namespace) -> int:
    """Show a finished run's statistics."""
    from ccpipe.stats import Stats

    path = Path(args.run_dir) / "stats" / "run.json"
    if not path.is_file():
        raise CcpipeError(f"{path} not found: is {args.run_dir} a finished run?")
    stats = Stats.load(path)
    print(json.dumps(stats.to_dict(), indent=2) if args.json else summary(stats, Path(args.run_dir)))
    return 0


def summary(stats, out_dir: Path) -> str:
    d = stats.to_dict()
    docs, chars = d["documents"], d["characters"]
    lines = [
        f"run: {out_dir}",
        f"documents: read {docs['read']:,}  kept {docs['kept']:,}  dropped {docs['dropped']:,}  errored {docs['errored']:,}"
        f"  (identity {'holds' if d['identity_holds'] else 'BROKEN'})",
        f"characters: read {chars['read']:,}  kept {chars['kept']:,}"
        + (f"  ({chars['kept'] / chars['read']:.1%})" if chars["read"] else ""),
    ]
    for name, st in d["steps"].items():
        lines.append(
            f"  {name:<12} in {st['docs_in']:>9,}  out {st['docs_out']:>9,}  chars {st['chars_in']:,} -> {st['chars_out']:,}"
            + (f"  dropped {st['dropped']}" if st["dropped"] else "")
        )
    if d["errors"]:
        lines.append(f"errors: {d['errors']}")
    if d["file_errors"]:
        lines.append(f"file problems: {d['file_errors']}")
    for path, text in d["file_problems"].items():
        lines.append(f"  {path}: {text}")
    top = list(d["kept_by_language"].items())[:12]
    if top:
        lines.append("kept by partition: " + ", ".join(f"{k} {v}" for k, v in top))
    return "\n".join(lines)


def _load_plugins() -> None:
    """Subcommands that live in other modules register themselves on import."""
    import importlib

    for mod in ("ccpipe.models.cli", "ccpipe.audit.cli", "ccpipe.evaluate"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod and not mod.startswith(str(e.name)):
                raise


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="ccpipe", description="CCNet-style Common Crawl pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None)
        add_args(p)
        p.set_defaults(handler=fn)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # the audit's atypicality imports faiss: it logs every SIMD probe
    lifeline.stop_on_sigterm()
    try:
        return args.handler(args)
    except CcpipeError as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (lifeline.Terminated)
        words, status = lifeline.interrupt_words(e)
        log.error("%s", INTERRUPTED.get(args.command, f"{args.command}: interrupted").replace("interrupted", words, 1))
        return status
    except OSError as e:  # a full disk, an unwritable or vanished path: say which, no traceback
        log.debug("details", exc_info=True)
        log.error("%s: %s (-v shows the traceback)", args.command, e)
        return 2


# What an interrupted command (Ctrl-C; SIGTERM says "terminated by SIGTERM") says instead of a KeyboardInterrupt traceback.
INTERRUPTED = {
    "run": "run stopped (interrupted); finished work is kept on disk: run the same command again to resume it",
    "audit": "audit interrupted; no report was written",
}


if __name__ == "__main__":
    # `python -m ccpipe.cli`: run the imported module's main, whose COMMANDS the
    # plugin subcommands (audit, models) register into, not this __main__ copy's
    from ccpipe.cli import main as _main

    sys.exit(_main())
