"""The audit report in headless Chromium: no console errors, and a screenshot shows plots.

Console messages are read from Chromium's own log (``--enable-logging=stderr`` prints every
page console message as an ``INFO:CONSOLE`` line); the report carries no scripts, so any
console message at all is a failure. A deliberately broken page checks that the detection
works on this Chromium build, so a silent logger cannot make the test pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ccpipe.audit import write_report
from realrun import DATA, session_run

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def headless(page: Path, shot: Path, tmp: Path, *, height: int = 2600) -> list[str]:
    """Load ``page``, write a screenshot, return the console messages it produced."""
    profile = tmp / f"profile-{shot.stem}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
        f"--window-size=1200,{height}", f"--screenshot={shot}", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return [line for line in proc.stderr.splitlines() if re.search(r":CONSOLE[:(]", line)]


def test_console_detection_works(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>")
    msgs = headless(bad, tmp_path / "bad.png", tmp_path, height=300)
    assert any("notDefinedAnywhere" in m for m in msgs), msgs


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (DATA / "wet").is_dir():
        pytest.skip(f"real data {DATA} is absent")
    run = session_run(tmp_path_factory, DATA)
    return write_report(run, tmp_path_factory.mktemp("audit") / "report.html")


def test_report_loads_without_console_errors_and_shows_plots(report_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    msgs = headless(report_file, shot, tmp_path)
    assert msgs == []
    im = Image.open(shot).convert("RGB")
    assert im.size == (1200, 2600)
    small = im.resize((120, 260))
    colours = small.getcolors(maxcolors=120 * 260) or []
    non_white = sum(n for n, c in colours if sum(c) < 3 * 240)
    assert non_white > 0.08 * 120 * 260, "screenshot is (nearly) blank"
    # The plots' blue and orange bars are on the page, not only black text.
    px = np.asarray(im, dtype=int).reshape(-1, 3)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    blue = int(((b > 140) & (r < 90) & (g > 90) & (g < 140)).sum())
    orange = int(((r > 190) & (g > 100) & (g < 160) & (b < 80)).sum())
    assert blue > 5000 and orange > 5000, (blue, orange)
    shutil.copy(shot, report_file.with_suffix(".png"))  # kept beside the report for a look


def test_whole_page_with_dropped_documents_and_clusters_renders(report_file: Path, tmp_path: Path) -> None:
    """The whole page in one tall screenshot: the dropped-document, domain, sample, MinHash
    side-by-side and run sections load with no console message, the differing lines of
    the clusters shown side by side are highlighted, and text cells stay inside the page."""
    from PIL import Image

    html = report_file.read_text()
    for anchor in ("dropped", "domains", "lengths", "samples", "quality", "dedup", "run"):
        assert f"<h2 id='{anchor}'>" in html, anchor
    shot = tmp_path / "whole.png"
    msgs = headless(report_file, shot, tmp_path, height=16000)
    assert msgs == []
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert _near(px, (250, 250, 250)).sum() > 20000, "no text cells (.txt background)"
    # nothing is drawn past the page's 1100px column plus its margins: long URLs and texts wrap
    right = px[:, 1160:, :]
    assert (right.sum(axis=2) < 3 * 235).sum() < 50, "something overflows the page to the right"
    shutil.copy(shot, report_file.with_name("whole.png"))  # kept beside the report for a look


def _near(px: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.abs(px - np.array(rgb)).sum(axis=2) <= 6


def test_near_duplicate_side_by_side_is_highlighted_on_screen(tmp_path: Path) -> None:
    """A removed near copy (one line edited) beside its kept original: both highlight colours
    are painted, and nothing else on the page uses them."""
    from PIL import Image

    from tests.conftest import near_duplicate_run

    run, _ = near_duplicate_run(tmp_path)
    page = write_report(run, tmp_path / "near-dup.html")
    shot = tmp_path / "near-dup.png"
    assert headless(page, shot, tmp_path, height=12000) == []
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert _near(px, (211, 242, 211)).sum() > 300, "the edited line is not highlighted in the copy"  # .ins
    assert _near(px, (251, 213, 213)).sum() > 300, "the replaced line is not highlighted in the original"  # .del
    shutil.copy(shot, tmp_path / "near-dup-kept.png")
