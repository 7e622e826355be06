"""Tiny pipeline-shaped parquet runs for geometry tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = {
    "cooking": ["Simmer the tomato sauce with garlic and basil for twenty minutes.", "Knead the bread dough until it is smooth, then let it rise.", "Roast the vegetables in olive oil with salt and pepper."],
    "football": ["The striker scored twice in the second half of the match.", "The goalkeeper saved a penalty in the final minute.", "The league title was decided on the last day of the season."],
    "python": ["Install the package with pip and import the module in your script.", "A list comprehension builds a new list from an iterable.", "Use a virtual environment to isolate the project's dependencies."],
    "astronomy": ["The telescope observed a distant galaxy with a bright core.", "Jupiter's moons orbit the planet in a few days each.", "A supernova outshines its entire galaxy for weeks."],
}


def make_doc_id(i: int) -> str:
    return f"<urn:uuid:{uuid.UUID(int=i + 1)}>"


def documents(n_per_topic: int = 6, start: int = 0) -> list[dict]:
    docs = []
    i = start
    for t, (topic, lines) in enumerate(TOPICS.items()):
        for j in range(n_per_topic):
            body = "\n".join(lines[(j + k) % len(lines)] + f" Note {j}." for k in range(2 + j % 3))
            docs.append({"id": make_doc_id(i), "url": f"https://example.org/{topic}/{j}", "title": f"{topic.title()} page {j}", "raw_content": body, "language": "en", "language_score": 0.9, "length": len(body), "nlines": body.count("\n") + 1})
            i += 1
    return docs


def write_shard(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs), path, compression="zstd")


def make_run(root: Path, *, n_per_topic: int = 6) -> Path:
    """<root>/run/en/part-00000.parquet, en/part-00001.parquet, stats/ and a decoy _tmp dir."""
    run = root / "run"
    docs = documents(n_per_topic)
    half = len(docs) // 2
    write_shard(run / "en" / "part-00000.parquet", docs[:half])
    write_shard(run / "en" / "part-00001.parquet", docs[half:])
    (run / "stats").mkdir(parents=True)
    (run / "stats" / "merged.json").write_text("{}")
    write_shard(run / "_tmp" / "part-00000.parquet", documents(1, start=9000))  # must be ignored
    return run
