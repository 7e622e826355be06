"""Argument checks of ``ccpipe-geometry``, in one place: argparse ``type=`` validators and a
parser whose errors are one line.

Like the YAML config checks (ccpipe/config.py), every check names the option, the range
it accepts and the value it got, and the command exits with status 2 before any work
starts: ``neighbours ID -k -5`` used to answer 45 neighbours, ``--c nan`` a silent
lambda of 0, ``path --points 100000`` an 80 GB allocation (the geodesic solver holds an
N x N matrix per pair), and ``--points 1``, ``--epochs -1``, ``--batch-size 0`` tracebacks.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

MAX_POINTS = 1024
"""Most points on a geodesic from the command line (the solver's N x N matrix: 8 MB)."""
MAX_BATCH = 65_536
"""Most rows per batch (embedding or training)."""
MAX_K = 10_000
"""Most neighbours or ANN candidates per query."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (its subcommands inherit it)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _range_text(kind: str, lo: float | None, hi: float | None, *, above: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}" if not above else f"{kind} > {lo} and <= {hi}"
    if lo is not None:
        return f"{kind} {'>' if above else '>='} {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """``type=``: an integer in [lo, hi] (either bound optional)."""
    want = _range_text("an integer", lo, hi)

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text[:40]!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text[:40]}")
        return v

    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """``type=``: a finite number in [lo, hi] (or (lo, hi] with ``above``); never NaN or inf."""
    want = _range_text("a finite number", lo, hi, above=above)

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text[:40]!r}") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if above else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text[:40]}")
        return v

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """``type=``: a torch device this machine has ("cpu", "cuda", "cuda:1", "mps")."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a torch device such as cpu or cuda:0, got {text[:40]!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text} asked for, but CUDA is not available on this machine (use cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text} asked for, but MPS is not available on this machine (use cpu)")
    return text


def host(text: str) -> str:
    """``type=``: an address or host name that resolves."""
    import socket

    try:
        socket.getaddrinfo(text, None)
    except (OSError, UnicodeError):
        raise argparse.ArgumentTypeError(f"cannot resolve {text[:60]!r} to an address") from None
    return text


def resume_hint(cmd: str, argv: list[str] | None) -> str:
    """The command line that picks up an interrupted ``embed`` or ``train`` where it stopped
    (the same one; ``train`` with ``--resume`` added)."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if cmd == "train" and "--resume" not in args:
        args.append("--resume")
    return "ccpipe-geometry " + shlex.join(args)
