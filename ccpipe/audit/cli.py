"""``ccpipe audit RUN [--compare OTHER_RUN] -o report.html``."""

from __future__ import annotations

import argparse

from ccpipe.cli import command


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="an output directory of `ccpipe run`")
    p.add_argument("--compare", metavar="OTHER_RUN", help="a second run shown side by side")
    p.add_argument("-o", "--out", default="audit.html", help="HTML file to write (default audit.html)")
    p.add_argument("--near-dup-cosine", type=float, default=None, help="embedding cosine that makes two documents near-duplicates (default 0.95)")
    p.add_argument("--top", type=int, default=None, help="atypical documents listed (default 15)")


@command("audit", _audit_args)
def _audit(args: argparse.Namespace) -> int:
    """Write a self-contained HTML quality report of a run."""
    from dataclasses import replace

    from ccpipe.audit import AuditConfig, write_report
    from ccpipe.errors import CcpipeError

    cfg = AuditConfig()
    given = {k: v for k, v in {"near_dup_cosine": args.near_dup_cosine, "top_atypical": args.top}.items() if v is not None}
    try:
        cfg = replace(cfg, **given)
    except ValueError as e:
        raise CcpipeError(f"bad audit option: {e}") from e
    from pathlib import Path

    from ccpipe.rundir import prepare

    prepare(Path(args.out).expanduser().parent, "audit output directory")  # fail before the work
    out = write_report(args.run_dir, args.out, compare=args.compare, config=cfg)
    print(out)
    return 0
