"""Counters that add up across shards and land as JSON.

Documents obey one identity, per shard and per run::

    read == kept + dropped + errored

``read`` counts WET conversion records and WARC response records met in the
input, ``errored`` the ones that could not be parsed, ``dropped`` the ones a step
removed (each with a reason; WARC responses that give no text are drops of the
``extract`` step: ``pdf``, ``not_html``, ``timeout``, ``empty``, ...).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class StepStats:
    """What went in and out of one step."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    """Step-specific figures (lines in/out, hashes, memory bytes...)."""
    seconds: float = 0.0

    def merge(self, other: "StepStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.dropped.update(other.dropped)
        merge_counters(self.counters, other.counters)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "dropped": dict(sorted(self.dropped.items())),
            "counters": dict(sorted(self.counters.items())),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepStats":
        return cls(
            docs_in=d["docs_in"],
            docs_out=d["docs_out"],
            chars_in=d["chars_in"],
            chars_out=d["chars_out"],
            dropped=Counter(d.get("dropped", {})),
            counters=Counter(d.get("counters", {})),
            seconds=d.get("seconds", 0.0),
        )


# Counters whose merge is a maximum rather than a sum (memory peaks).
_MAX_SUFFIXES = ("_max", "_peak_bytes")


def merge_counters(into: Counter, other: Counter | dict) -> None:
    """Add counters; keys ending in ``_max``/``_peak_bytes`` keep the maximum."""
    for key, value in other.items():
        if key.endswith(_MAX_SUFFIXES):
            into[key] = max(into.get(key, 0), value)
        else:
            into[key] += value


@dataclass(slots=True)
class Stats:
    """Statistics of one shard, or of a whole run once merged."""

    docs_read: int = 0
    chars_read: int = 0
    docs_kept: int = 0
    chars_kept: int = 0
    errors: Counter = field(default_factory=Counter)
    """Records that could not be parsed, by reason."""
    file_errors: Counter = field(default_factory=Counter)
    """Problems that concern a file rather than one record (no record count known)."""
    file_problems: dict[str, str] = field(default_factory=dict)
    """Input files that could not be read or yielded no document, by path: what they
    look like (``empty file``, ``a WARC file with no usable HTML response: ...``)."""
    steps: dict[str, StepStats] = field(default_factory=dict)
    by_language: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    shards: int = 0

    def step(self, name: str) -> StepStats:
        if name not in self.steps:
            self.steps[name] = StepStats()
        return self.steps[name]

    def error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] += n

    @property
    def docs_errored(self) -> int:
        return sum(self.errors.values())

    @property
    def dropped(self) -> Counter:
        """Drops of every step, keyed ``<step>/<reason>``."""
        total: Counter = Counter()
        for name, st in self.steps.items():
            for reason, n in st.dropped.items():
                total[f"{name}/{reason}"] += n
        return total

    @property
    def docs_dropped(self) -> int:
        return sum(self.dropped.values())

    def identity_holds(self) -> bool:
        return self.docs_read == self.docs_kept + self.docs_dropped + self.docs_errored

    def check(self) -> None:
        """Raise if documents went missing: every document is kept, dropped or errored."""
        if not self.identity_holds():
            raise AssertionError(
                f"stats identity broken: read={self.docs_read} kept={self.docs_kept} "
                f"dropped={self.docs_dropped} errored={self.docs_errored}"
            )
        for name, st in self.steps.items():
            if st.docs_in - st.docs_out != sum(st.dropped.values()):
                raise AssertionError(
                    f"step {name}: {st.docs_in} in, {st.docs_out} out, "
                    f"but drops add to {sum(st.dropped.values())}"
                )

    def merge(self, other: "Stats") -> "Stats":
        self.docs_read += other.docs_read
        self.chars_read += other.chars_read
        self.docs_kept += other.docs_kept
        self.chars_kept += other.chars_kept
        self.errors.update(other.errors)
        self.file_errors.update(other.file_errors)
        self.file_problems.update(other.file_problems)
        for name, st in other.steps.items():
            self.step(name).merge(st)
        self.by_language.update(other.by_language)
        merge_counters(self.counters, other.counters)
        self.shards += other.shards
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": {
                "read": self.docs_read,
                "kept": self.docs_kept,
                "dropped": self.docs_dropped,
                "errored": self.docs_errored,
            },
            "characters": {"read": self.chars_read, "kept": self.chars_kept},
            "identity_holds": self.identity_holds(),
            "dropped": dict(sorted(self.dropped.items())),
            "errors": dict(sorted(self.errors.items())),
            "file_errors": dict(sorted(self.file_errors.items())),
            "file_problems": dict(sorted(self.file_problems.items())),
            "steps": {name: st.to_dict() for name, st in self.steps.items()},
            "kept_by_language": dict(self.by_language.most_common()),
            "counters": dict(sorted(self.counters.items())),
            "shards": self.shards,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        return cls(
            docs_read=d["documents"]["read"],
            chars_read=d["characters"]["read"],
            docs_kept=d["documents"]["kept"],
            chars_kept=d["characters"]["kept"],
            errors=Counter(d.get("errors", {})),
            file_errors=Counter(d.get("file_errors", {})),
            file_problems=dict(d.get("file_problems", {})),
            steps={k: StepStats.from_dict(v) for k, v in d.get("steps", {}).items()},
            by_language=Counter(d.get("kept_by_language", {})),
            counters=Counter(d.get("counters", {})),
            shards=d.get("shards", 0),
        )

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Stats":
        return cls.from_dict(json.loads(Path(path).read_text()))


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
