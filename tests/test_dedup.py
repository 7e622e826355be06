"""Line dedup with cc_net's semantics: group-wide hash sets, two passes.

``tests/test_ccnet_reference.py`` checks the same semantics against cc_net's own code."""

from __future__ import annotations

import numpy as np
import pytest

from ccpipe.document import Document
from ccpipe.stats import Stats
from ccpipe.steps.base import TaskContext, counted
from ccpipe.steps.dedup import LineDedup, group_files, hash_documents, merge_group, shard_hashes_dir

SHARD_A = [
    ["Menu", "Alpha unique text", "Copyright 2020"],
    ["Menu", "Beta unique text", "beta twice", "Beta Twice"],
]
SHARD_B = [
    ["MENU", "Copyright 2021"],  # same keys as lines of shard A once normalised
    ["Gamma unique text"],
]


def docs_of(shard: list[list[str]], tag: str) -> list[Document]:
    return [Document(id=f"{tag}{i}", url="u", date_download="", digest="", title="t", raw_content="\n".join(lines),
                     position=i) for i, lines in enumerate(shard)]


def dedup(shards: list[list[list[str]]], group_size: int, keep_first: bool, tmp_path,
          removed: dict[int, list[int]] | None = None) -> tuple[list[list[str | None]], Stats]:
    """Run pass 1, the group merge and pass 2 the way the executors do; ``removed``:
    shard -> documents that document-level dedup removed (they skip pass 2)."""
    removed = removed or {}
    groups: dict[int, list[int]] = {}
    for t, shard in enumerate(shards):
        groups.setdefault(t // group_size, []).append(t)
        hash_documents(docs_of(shard, str(t)), shard_hashes_dir(tmp_path, t), keep_first)
    for g, members in groups.items():
        dups, first = group_files(tmp_path, g)
        masks = [np.isin(np.arange(len(shards[t])), removed.get(t, [])) for t in members]
        merge_group([shard_hashes_dir(tmp_path, t) for t in members], dups, first, keep_first, masks)
    stats = Stats()
    out = []
    for t, shard in enumerate(shards):
        ctx = TaskContext(task_id=t, work_dir=tmp_path, stats=stats, group_id=t // group_size, index_in_group=t % group_size)
        step = LineDedup(keep_first=keep_first)
        docs = [d for d in docs_of(shard, str(t)) if d.position not in removed.get(t, [])]
        kept = {d.id: d.raw_content for d in counted(step, docs, ctx)}
        out.append([kept.get(f"{t}{i}") for i in range(len(shard))])
    return out, stats


def test_ccnet_mode_removes_lines_of_two_documents_and_in_document_repeats_after_the_first(tmp_path):
    out, stats = dedup([SHARD_A, SHARD_B], group_size=2, keep_first=False, tmp_path=tmp_path)
    assert out == [
        ["Alpha unique text", "Beta unique text\nbeta twice"],  # "beta twice" twice in one doc: the first stays
        [None, "Gamma unique text"],  # every line seen in another document: document dropped
    ]
    st = stats.steps["line_dedup"]
    assert st.dropped == {"all_lines_duplicated": 1}
    assert (st.docs_in, st.docs_out) == (4, 3)
    assert st.counters["lines_in"] == 10 and st.counters["lines_out"] == 4


def test_design_example_as_cc_net_keeps_it(tmp_path):
    """DESIGN.md section 3, checked against cc_net 1.0.0's own code:
    "A B A C", "D E D B", "F F" -> "A C", "D E", "F"."""
    shard = [["A", "B", "A", "C"], ["D", "E", "D", "B"], ["F", "F"]]
    out, _ = dedup([shard], group_size=1, keep_first=False, tmp_path=tmp_path)
    assert out == [["A\nC", "D\nE", "F"]]


def test_keep_first_mode_keeps_the_first_occurrence_in_shard_order(tmp_path):
    out, _ = dedup([SHARD_A, SHARD_B], group_size=2, keep_first=True, tmp_path=tmp_path)
    assert out == [
        ["Menu\nAlpha unique text\nCopyright 2020", "Beta unique text\nbeta twice"],
        [None, "Gamma unique text"],
    ]


def test_groups_do_not_share_hashes(tmp_path):
    out, _ = dedup([SHARD_A, SHARD_B], group_size=1, keep_first=False, tmp_path=tmp_path)
    assert out == [
        ["Alpha unique text\nCopyright 2020", "Beta unique text\nbeta twice"],  # "Menu" in two docs of shard A
        ["MENU\nCopyright 2021", "Gamma unique text"],  # shard B alone has no repeats
    ]


def test_removed_documents_do_not_make_lines_duplicates(tmp_path):
    """A near-duplicate copy removed before line dedup must not strip the kept copy."""
    page = ["Title of a page", "Its first paragraph", "Its second paragraph"]
    copy = ["Title of a page", "Its first paragraph", "Its second paragraph, edited"]
    out, _ = dedup([[page, copy, ["Another page"]]], 1, False, tmp_path, removed={0: [1]})
    assert out == [["\n".join(page), None, "Another page"]]
    out, _ = dedup([[page, copy, ["Another page"]]], 1, False, tmp_path / "no-removal")
    assert out == [["Its second paragraph", "Its second paragraph, edited", "Another page"]]  # both stripped


def test_empty_documents_are_dropped_as_cc_net_does(tmp_path):
    out, stats = dedup([[[""], ["Some text"]]], 1, False, tmp_path)
    assert out == [[None, "Some text"]]
    assert stats.steps["line_dedup"].dropped == {"empty": 1}


def test_hash_set_is_compact_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    # letters only: digits would all fold to 0 under the dedup normalisation
    letters = np.array(list("abcdefghij"))
    words = np.array(["".join(w) for w in rng.choice(letters, (5000, 7))])
    shard = [[" ".join(ws) for ws in rng.choice(words, (50, 6))] for _ in range(200)]
    for t in range(2):
        hash_documents(docs_of(shard, str(t)), shard_hashes_dir(tmp_path, t), False)
    dups, first = group_files(tmp_path, 0)
    c = merge_group([shard_hashes_dir(tmp_path, t) for t in range(2)], dups, first, False)
    n_unique = c["group_unique_lines"]
    assert n_unique == len({line for doc in shard for line in doc})
    # every line of shard 0 is in shard 1 too: all are duplicates
    assert c["group_duplicate_keys"] == n_unique
    assert c["hashset_bytes"] / n_unique == 8
    # the peak counts the second shard's own arrays too (its documents' keys and their
    # unique set); it stays under 16 B per unique line plus 16 B per line of that shard
    assert c["hashset_peak_bytes"] <= 16 * n_unique + 16 * 10000 + 2 * 10000
    assert np.load(dups).dtype == np.uint64


def test_changed_input_between_passes_is_an_error(tmp_path):
    hash_documents(docs_of(SHARD_A, "0"), shard_hashes_dir(tmp_path, 0), False)
    dups, first = group_files(tmp_path, 0)
    merge_group([shard_hashes_dir(tmp_path, 0)], dups, first, False)
    ctx = TaskContext(task_id=0, work_dir=tmp_path, stats=Stats())
    changed = docs_of([["Menu", "extra line", "Alpha unique text", "Copyright 2020"]], "0")
    from ccpipe.errors import CcpipeError

    with pytest.raises(CcpipeError, match="differs from the hashing pass"):
        list(LineDedup().run(changed, ctx))
