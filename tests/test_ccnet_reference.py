"""Line dedup against cc_net's own code (PyPI ``cc-net==1.0.0``, installed by set-up
with ``--no-deps``): ``dedup.HashesCollector`` over a group, then
``dedup.DuplicatesRemover``, beside ccpipe's run on the same real WET files."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

from ccpipe.config import load_config
from ccpipe.io.dataset import read_rows
from ccpipe.io.wet import read_wet
from ccpipe.pipeline import run_pipeline
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path

EXCERPTS = (
    "CC-MAIN-2017-30-00008.excerpt.single-gzip-stream.wet.gz",
    "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz",
    "CC-MAIN-2024-22-00000.one-page.warc.wet.gz",
)


def ccnet_dedup(files: list[Path], tmp: Path) -> dict[str, str]:
    """cc_net's line dedup of the documents of ``files`` as one group: id -> raw_content."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "getpy not found": cc_net then uses its numpy hash set
            from cc_net import dedup as ccd
    except ImportError as e:
        pytest.skip(f"cc_net is not importable ({e}); set-up installs cc-net==1.0.0 --no-deps")
    docs = [{"id": d.id, "raw_content": d.raw_content} for f in files for d in read_wet(str(f), Stats())]
    collector = ccd.HashesCollector(field="raw_content", output=tmp / "hashes.bin")
    for d in docs:
        collector.do(d)
    collector.close()
    remover = ccd.DuplicatesRemover(field="raw_content", hashes_files=[tmp / "hashes.bin"])
    remover._prepare()
    out = {}
    for d in docs:
        kept = remover.do(copy.deepcopy(d))
        if kept is not None:
            out[kept["id"]] = kept["raw_content"]
    return out


def ccpipe_dedup(files: list[Path], out: Path, **overrides) -> dict[str, str]:
    """ccpipe with only line dedup deciding: MinHash, perplexity, is-reference off, every
    language kept; the files form one dedup group."""
    o = {"input.paths": [str(f) for f in files], "output.dir": str(out), "executor.progress": False,
         "executor.workers": 2, "minhash.enabled": False, "perplexity.enabled": False, "ref.enabled": False,
         "langid.threshold": 0.0, "dedup.group_size": 50}
    o.update(overrides)
    run_pipeline(load_config(ROOT / "configs" / "default.yaml", o))
    t = read_rows(out, ["id", "raw_content"])
    return dict(zip(t.column("id").to_pylist(), t.column("raw_content").to_pylist()))


@pytest.mark.parametrize("name", EXCERPTS)
def test_line_dedup_equals_cc_net_on_each_excerpt(tmp_path, name):
    files = [data_path("wet", name)]
    ref = ccnet_dedup(files, tmp_path)
    got = ccpipe_dedup(files, tmp_path / "out")
    assert sorted(got) == sorted(ref)
    differ = [i for i in ref if got[i] != ref[i]]
    assert differ == [], f"{len(differ)} of {len(ref)} documents differ from cc_net"
    assert len(ref) >= 1


def test_line_dedup_equals_cc_net_on_a_group_of_files_split_into_shards(tmp_path):
    """Several files, each split into several shards, all in one group."""
    files = [data_path("wet", n) for n in ("CC-MAIN-2017-30-00008.excerpt.warc.wet.gz",
                                           "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")]
    ref = ccnet_dedup(files, tmp_path)
    got = ccpipe_dedup(files, tmp_path / "out", **{"input.split_mb": 0.1})
    assert len(ref) > 150
    assert got == ref
