"""Input that gives no document is named, never a silent empty success (issue 12,
item 2; since issue 16 a WARC file of HTML responses is good input, one of PDFs is not)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccpipe.io.input_check import InputTally
from ccpipe.io.warc import write_warc
from ccpipe.io.wet import read_wet
from ccpipe.stats import Stats
from tests.conftest import ROOT, data_path, write_wet


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "bad"
    d.mkdir()
    files = {
        "random": d / "random.warc.wet.gz",
        "csv": d / "table.warc.wet.gz",
        "empty": d / "empty.warc.wet.gz",
    }
    files["random"].write_bytes(bytes(range(7, 256)) * 20)  # no gzip magic, no WARC line
    files["csv"].write_bytes(gzip.compress(b"url,title,date\nhttps://a.example/,A,2024-01-01\n" * 50))
    files["empty"].write_bytes(b"")
    files["warc"] = d / "no-html.warc.gz"  # responses, none of them an HTML page
    write_warc(files["warc"], [("https://a.example/doc.pdf", "application/pdf", b"%PDF-1.4\n" + b"x" * 500),
                               ("https://a.example/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300),
                               ("https://a.example/gone", "text/html", b"<html><p>Not found</p></html>", "404 Not Found")])
    return files


def _problems(paths: list[Path]) -> dict[str, tuple[str, str]]:
    tally = InputTally()
    for p in paths:
        st = Stats()
        list(read_wet(str(p), st))
        tally.add(str(p), st)
    return tally.problems()


def test_each_kind_of_non_wet_file_is_named_with_what_it_looks_like(tmp_path):
    files = _bad_files(tmp_path)
    good = data_path("wet", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")
    got = _problems([*files.values(), good])
    assert str(good) not in got
    assert got[str(files["empty"])] == ("input_no_records", "empty file (0 bytes); no WARC record in it")
    assert got[str(files["random"])] == ("input_no_records", "not gzip: binary data starting 07 08 09 0a 0b 0c 0d 0e; no WARC record in it")
    assert got[str(files["csv"])] == ("input_no_records", "gzip holding text starting 'url,title,date'; no WARC record in it")
    assert got[str(files["warc"])] == (
        "input_no_records",
        "a WARC file with no usable HTML response: 3 response, 1 warcinfo record(s); "
        "responses skipped: http_status 1, image 1, pdf 1",
    )
    # the real WARC excerpt (16 HTML responses, their requests and metadata) is good input
    assert str(data_path("warc", "CC-MAIN-2020-34.excerpt.warc.gz")) not in _problems(
        [data_path("warc", "CC-MAIN-2020-34.excerpt.warc.gz")])


def test_damaged_wet_fixtures_without_a_readable_record_are_named():
    broken = sorted(data_path("wet", "broken").iterdir())
    got = _problems(broken)
    assert {Path(p).name: v for p, v in got.items()} == {
        "corrupt_warcconversion_2.wet.gz": ("input_no_records", "1 conversion record(s), none readable (missing_header 1)"),
        "file_and_wet_headers_only.wet.gz": ("input_no_records", "1 conversion record(s), none readable (truncated_header 1)"),
        "file_headers_only.wet.gz": ("input_no_records", "WARC records but no conversion record: 1 warcinfo"),
    }


def test_a_file_mostly_outside_records_is_named(tmp_path):
    path = write_wet(tmp_path / "x.warc.wet", [("https://a.example/", "Title\nsome text")], gzip_per_record=False)
    clean = _problems([path])
    with open(path, "ab") as f:
        f.write(b"a log line pasted into the file by mistake\n" * 200)
    (p, (reason, text)), = _problems([path]).items()
    assert clean == {}
    assert reason == "input_mostly_outside_records"
    assert text.endswith("lie outside WARC records; 1 document(s) read") and text.startswith("9")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ccpipe.cli", "run", *args, "--no-progress", "-w", "1",
         "--set", "perplexity.enabled=false", "--set", "ref.enabled=false"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


@pytest.mark.timeout(300)
def test_run_of_only_bad_files_fails_and_names_them(tmp_path):
    files = _bad_files(tmp_path)
    out = tmp_path / "out"
    r = _cli(*map(str, files.values()), "-o", str(out))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if " ERROR " in ln]
    assert len(err) == 1 and "no input yielded a document" in err[0]
    for p in files.values():
        assert str(p) in err[0]
    assert "empty file (0 bytes)" in err[0] and "a WARC file with no usable HTML response" in err[0]
    run = json.loads((out / "stats" / "run.json").read_text())
    assert run["documents"]["read"] == 3 and run["dropped"] == {"extract/http_status": 1, "extract/image": 1,
                                                                "extract/pdf": 1}
    assert set(run["file_problems"]) == {str(p) for p in files.values()}
    assert run["file_errors"]["input_no_records"] == 4


@pytest.mark.timeout(300)
def test_bad_file_among_good_ones_is_listed_and_the_run_succeeds(tmp_path):
    files = _bad_files(tmp_path)
    good = data_path("wet", "CC-MAIN-2016-50-00009.excerpt-en.warc.wet.gz")
    out = tmp_path / "out"
    r = _cli(str(good), str(files["warc"]), "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"  {files['warc']}: a WARC file with no usable HTML response" in r.stdout
    run = json.loads((out / "stats" / "run.json").read_text())
    assert list(run["file_problems"]) == [str(files["warc"])]
    assert run["documents"]["read"] == 25 + 3 and run["file_errors"] == {"input_no_records": 1}
    assert os.path.getsize(out / "stats" / "run.json") > 0
