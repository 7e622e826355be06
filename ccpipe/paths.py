"""Where ccpipe keeps what ``scripts/setup.sh`` installs outside the repository.

Everything lives under one cache directory, ``$CCPIPE_HOME`` (default
``~/.cache/ccpipe``)::

    bin/       lmplz, build_binary (KenLM command-line tools built from the kenlm sdist)
    models/    trained models (SentencePiece, KenLM, quality classifier)
    corpora/   reference text: wiki/en.txt, docs/<lang>.txt, SOURCES.txt
    demo/      the embedded demo crawl: demo.warc.wet.gz, demo-000N.warc.wet.gz, wet.paths
    demo-warc/ the same pages as WARC files of HTML responses: demo-000N.warc.gz, warc.paths
    cache/     downloads kept between runs (Debian .deb files, ...)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV_VAR = "CCPIPE_HOME"


def ccpipe_home() -> Path:
    """``$CCPIPE_HOME`` or ``~/.cache/ccpipe`` (not created)."""
    value = os.environ.get(ENV_VAR)
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "ccpipe"


def bin_dir() -> Path:
    return ccpipe_home() / "bin"


def models_dir() -> Path:
    return ccpipe_home() / "models"


def corpora_dir() -> Path:
    return ccpipe_home() / "corpora"


def demo_dir() -> Path:
    return ccpipe_home() / "demo"


def cache_dir() -> Path:
    return ccpipe_home() / "cache"


def find_binary(name: str) -> Path | None:
    """A tool such as ``lmplz`` or ``build_binary``: ``bin_dir()`` first, then ``$PATH``."""
    p = bin_dir() / name
    if p.is_file() and os.access(p, os.X_OK):
        return p
    found = shutil.which(name)
    return Path(found) if found else None
