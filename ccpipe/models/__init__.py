"""Models the pipeline needs, built offline: where they live and how to check them.

Layout under ``models_dir()`` (``$CCPIPE_HOME/models``), CCNet's file names::

    lm/<lang>.sp.model      SentencePiece unigram model (LM-normalised text)
    lm/<lang>.arpa.bin      KenLM 5-gram, binary (``build_binary``)
    lm/cutoff.csv           perplexity percentiles p0..p99, one column per language
                            (the layout of CCNet's ``cutoff.csv``)
    ref/ref_classifier.bin  fastText is-reference classifier (LLaMA)
    ref/ref_classifier.metrics.json  its held-out precision / recall / ROC AUC
    quality/quality_score.json  centres, scales and weights of ``quality_score``

CCNet's released ``<lang>.sp.model`` + ``<lang>.arpa.bin`` drop into ``lm/`` as
they are (``ccpipe models install-lm``).
"""

from __future__ import annotations

from pathlib import Path

from ccpipe.errors import ModelError
from ccpipe.paths import models_dir

BUILD_HINT = "build the defaults with `ccpipe models build-defaults`"


def lm_dir(root: Path | None = None) -> Path:
    return Path(root) if root is not None else models_dir() / "lm"


def sp_path(lang: str, root: Path | None = None) -> Path:
    return lm_dir(root) / f"{lang}.sp.model"


def kenlm_path(lang: str, root: Path | None = None) -> Path:
    return lm_dir(root) / f"{lang}.arpa.bin"


def cutoff_path(root: Path | None = None) -> Path:
    return lm_dir(root) / "cutoff.csv"


def ref_dir() -> Path:
    return models_dir() / "ref"


def ref_model_path() -> Path:
    return ref_dir() / "ref_classifier.bin"


def quality_model_path() -> Path:
    return models_dir() / "quality" / "quality_score.json"


def available_lm_languages(root: Path | None = None) -> list[str]:
    """Languages with a SentencePiece or a KenLM model in ``root`` (a language with
    only one of the two is listed, so that checking it names the missing file)."""
    d = lm_dir(root)
    if not d.is_dir():
        return []
    langs = {p.name.split(".", 1)[0] for pat in ("*.sp.model", "*.arpa.bin", "*.arpa") for p in d.glob(pat)}
    return sorted(langs)


def check_file(path: Path, what: str, hint: str = BUILD_HINT, magic: bytes | None = None) -> None:
    """Raise :class:`ModelError` naming ``path`` if it is missing, empty or of the wrong kind."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} {path} not found; {hint}")
    if path.stat().st_size == 0:
        raise ModelError(f"{what} {path} is empty (interrupted build?); {hint}")
    if magic is not None:
        with path.open("rb") as f:
            head = f.read(len(magic))
        if head != magic:
            raise ModelError(f"{what} {path} is corrupt (unexpected file header); {hint}")
