"""Schemathesis hooks (SCHEMATHESIS_HOOKS=st_hostile_hooks): hostile values in generated bodies.

Schemathesis generates JSON that a strict encoder accepts; a hostile client sends what
Python's JSON reader also accepts. Of every three generated bodies, one has each number
replaced by ``NaN``, ``Infinity``, ``-Infinity`` or ``1e400`` (in turn), one has each
string replaced by one holding a lone surrogate (``"\\ud800"``), one goes unchanged. The
body goes out as those bytes (set in ``before_call``). Each changed body adds a line to the file named by
``ST_HOSTILE_LOG``, so the test can tell that they were sent.
"""

from __future__ import annotations

import itertools
import json
import os
import threading

import schemathesis

NUMBERS = ("NaN", "Infinity", "-Infinity", "1e400")
SURROGATES = ("\ud800", "x\udfffy", "\udbff", "ok \ud83d")

_turn = itertools.count()
_lock = threading.Lock()


def _walk(value, leaf):
    if isinstance(value, dict):
        return {k: _walk(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, leaf) for v in value]
    return leaf(value)


def hostile(body, turn: int) -> tuple[bytes | None, str]:
    """The body's bytes with hostile values, and what was done; None when nothing changed."""
    kind = ("numbers", "strings", "none")[turn % 3]
    changed = []
    if kind == "numbers":
        def leaf(v):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                changed.append(NUMBERS[(turn // 3 + len(changed)) % len(NUMBERS)])
                return f"@@num{len(changed) - 1}@@"
            return v
        text = json.dumps(_walk(body, leaf))
        for i, lit in enumerate(changed):
            text = text.replace(f'"@@num{i}@@"', lit)
    elif kind == "strings":
        def leaf(v):
            if isinstance(v, str):
                changed.append(v)
                return v[:8] + SURROGATES[(turn // 3 + len(changed)) % len(SURROGATES)]
            return v
        text = json.dumps(_walk(body, leaf))  # ensure_ascii: "\ud800" as an escape
    else:
        return None, kind
    return (text.encode() if changed else None), kind


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    # At call time, not in map_body: generation (negative mode included) re-encodes bodies
    # as strict JSON, which cannot hold these values; a bytes body goes out as it is.
    if not isinstance(case.body, (dict, list)):
        return
    with _lock:
        turn = next(_turn)
    data, kind = hostile(case.body, turn)
    if data is None:
        return
    case.body = data
    log = os.environ.get("ST_HOSTILE_LOG")
    if log:
        with _lock, open(log, "a") as f:
            f.write(f"{kind} {data[:120]!r}\n")
