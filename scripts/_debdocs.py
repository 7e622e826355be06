"""Shared helpers for the set-up scripts: Debian documentation packages as a
source of real, multilingual HTML pages (no install needed).

The ``.deb`` files are fetched with ``apt-get download`` into
``$CCPIPE_HOME/cache/debs`` (kept, so the corpus and demo builders share one
download) and read straight from ``dpkg-deb --fsys-tarfile`` without being
installed or unpacked to disk.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ccpipe.paths without requiring the editable install

from ccpipe.paths import ccpipe_home  # noqa: E402

# Package -> how its HTML paths map to a language.
#   debian-handbook: usr/share/doc/debian-handbook/html/<ll-CC>/<page>.html  (26 languages)
#   libreoffice-help-*: usr/share/libreoffice/help/<lang>/text/**/<page>.html
DOC_PACKAGES = [
    "debian-handbook",
    "libreoffice-help-en-us",
    "libreoffice-help-fr",
    "libreoffice-help-de",
    "libreoffice-help-es",
]

LICENSES = {
    "debian-handbook": "GPL-2.0+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook, "
    "R. Hertzog & R. Mas; translations by the Debian community)",
    "libreoffice-help": "MPL-2.0 (LibreOffice help, The Document Foundation)",
}

_HANDBOOK_RE = re.compile(r"usr/share/doc/debian-handbook/html/([A-Za-z]{2,3})(?:-([A-Za-z]{2}))?/[^/]+\.html$")
_LO_RE = re.compile(r"usr/share/libreoffice/help/([A-Za-z]{2,3})(?:-([A-Za-z]{2}))?/text/.+\.html$")


@dataclass
class Page:
    package: str
    version: str
    path: str  # path inside the package, e.g. usr/share/doc/debian-handbook/html/fr-FR/apt.html
    lang: str  # ISO 639-1 (or -3) code taken from the path, e.g. "fr"
    locale: str  # as in the path, e.g. "fr-FR"
    mtime: int
    html: bytes


def deb_cache_dir() -> Path:
    d = ccpipe_home() / "cache" / "debs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def log(msg: str) -> None:
    print(f"[setup] {msg}", flush=True)


def _apt_download(pkgs: list[str], dest: Path) -> None:
    cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *pkgs]
    log(f"apt-get download {' '.join(pkgs)}")
    r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    if r.returncode != 0:
        # A fresh machine may have empty package lists: update once and retry.
        if os.geteuid() == 0:
            log("apt-get download failed; running apt-get update and retrying")
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit(f"apt-get download {' '.join(pkgs)} failed (is apt configured? try apt-get update)")


def fetch_debs(pkgs: list[str] = DOC_PACKAGES) -> dict[str, Path]:
    """Return {package: path of its .deb}, downloading the missing ones."""
    dest = deb_cache_dir()

    def cached(p: str) -> Path | None:
        hits = sorted(dest.glob(f"{p}_*.deb"))
        return hits[-1] if hits else None

    missing = [p for p in pkgs if cached(p) is None]
    if missing:
        _apt_download(missing, dest)
    out = {}
    for p in pkgs:
        deb = cached(p)
        if deb is None:
            raise SystemExit(f"{p}: no .deb in {dest} after apt-get download")
        out[p] = deb
    return out


def deb_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _lang_of(path: str) -> tuple[str, str] | None:
    m = _HANDBOOK_RE.search(path) or _LO_RE.search(path)
    if not m:
        return None
    ll, cc = m.group(1).lower(), m.group(2)
    return ll, f"{ll}-{cc.upper()}" if cc else ll


def iter_pages(deb: Path, package: str) -> Iterator[Page]:
    """Yield the HTML pages of one .deb (read from its data tarball, in archive order)."""
    version = deb_version(deb)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for ti in tar:
                if not ti.isfile():
                    continue
                name = ti.name.lstrip("./")
                if not name.endswith(".html"):
                    continue
                lang = _lang_of(name)
                if lang is None:
                    continue
                f = tar.extractfile(ti)
                if f is None:
                    continue
                yield Page(package, version, name, lang[0], lang[1], int(ti.mtime), f.read())
    finally:
        proc.stdout.close()
        proc.wait()


def html_to_text(html: bytes, main_content: bool) -> tuple[str, str]:
    """(title, plain text) of an HTML page with resiliparse."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    try:  # these packages are UTF-8; detection alone misreads some pages (mojibake)
        doc = html.decode("utf-8")
    except UnicodeDecodeError:
        doc = bytes_to_str(html, detect_encoding(html))
    tree = HTMLTree.parse(doc)
    title = " ".join((tree.title or "").split())
    text = extract_plain_text(
        tree,
        main_content=main_content,
        alt_texts=False,
        links=False,
        list_bullets=False,
        preserve_formatting=True,
    )
    return title, text


# --- what both demo builders share: their options, the completion stamp, shard bounds ---

def demo_parser(description: str, default_out: str) -> "argparse.ArgumentParser":
    """The options of ``make_demo_wet.py`` and ``make_demo_warc.py``."""
    import argparse

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {default_out})")
    ap.add_argument("--shards", type=int, default=4, help="number of demo-NNNN shards (default 4)")
    ap.add_argument("--lo-stride", type=int, default=5, help="keep every N-th LibreOffice help page (default 5)")
    ap.add_argument("--limit", type=int, default=None, help="keep only the first N pages (after shuffling)")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    ap.add_argument("--check", action="store_true", help="exit 0 iff the demo files are complete")
    return ap


@dataclass
class Stamp:
    """``<out>/.complete``, written last: its first line names what was built (format
    version and options), so a build with other options is not mistaken for this one."""

    out: Path
    want: str
    files: list[str]

    @property
    def path(self) -> Path:
        return self.out / ".complete"

    def complete(self) -> bool:
        return (self.path.exists() and self.path.read_text().splitlines()[:1] == [self.want]
                and all((self.out / n).exists() for n in self.files))

    def settled(self, args, built: str) -> int | None:
        """The exit code when there is nothing to build: ``--check`` (0 if complete, else 1),
        or a complete build without ``--force`` (logs ``built``); ``None`` to go on."""
        if args.check:
            return 0 if self.complete() else 1
        if self.complete() and not args.force:
            log(f"{built} already built: {self.out}")
            return 0
        return None

    def begin(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)

    def finish(self, summary: str) -> None:
        self.path.write_text(f"{self.want}\n{summary}\n")


def shard_bounds(n_items: int, n_shards: int) -> list[int]:
    """Start offsets of ``n_shards`` contiguous, near-equal shards, plus the end."""
    return [round(i * n_items / n_shards) for i in range(n_shards + 1)]


def remove_stale_shards(out: Path, pattern: str, names: list[str]) -> None:
    """Delete shards of an earlier build with more shards than this one."""
    for stale in out.glob(pattern):
        if stale.name not in names:
            stale.unlink()
