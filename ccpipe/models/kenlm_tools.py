"""KenLM's command-line tools: build ``lmplz``/``build_binary`` once, run them.

The ``kenlm`` wheel only has the Python query module; the sdist on PyPI carries
the whole C++ source, from which cmake builds the two tools in about a minute
(Debian build deps: ``build-essential cmake libboost-program-options-dev
libboost-system-dev libboost-thread-dev libboost-test-dev libeigen3-dev
zlib1g-dev libbz2-dev liblzma-dev``). They are cached in ``$CCPIPE_HOME/bin``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ccpipe.errors import ModelError
from ccpipe.paths import bin_dir, find_binary

log = logging.getLogger(__name__)

TOOLS = ("lmplz", "build_binary")
DEBIAN_DEPS = (
    "build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev "
    "libboost-test-dev libeigen3-dev zlib1g-dev libbz2-dev liblzma-dev"
)


def kenlm_tools(build: bool = False) -> tuple[Path, Path]:
    """Paths of ``lmplz`` and ``build_binary``; build them first when ``build`` and missing."""
    found = [find_binary(t) for t in TOOLS]
    if all(found):
        return found[0], found[1]  # type: ignore[return-value]
    if not build:
        raise ModelError(
            f"KenLM tools {', '.join(t for t, p in zip(TOOLS, found) if not p)} not found in {bin_dir()} "
            "or $PATH; build them with `ccpipe models build-kenlm`"
        )
    build_kenlm_tools()
    return kenlm_tools(build=False)


def _kenlm_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("kenlm")
    except Exception:
        return None


def build_kenlm_tools(dest: Path | None = None, jobs: int | None = None, sdist: Path | None = None) -> list[Path]:
    """Download the kenlm sdist (same version as the Python module), cmake + make the tools."""
    dest = Path(dest) if dest else bin_dir()
    jobs = jobs or os.cpu_count() or 2
    if not shutil.which("cmake"):
        raise ModelError(f"cmake not found; install the Debian packages: apt-get install {DEBIAN_DEPS}")
    with tempfile.TemporaryDirectory(prefix="ccpipe-kenlm-") as tmp:
        tmpd = Path(tmp)
        if sdist is None:
            ver = _kenlm_version()
            spec = f"kenlm=={ver}" if ver else "kenlm"
            log.info("pip download --no-binary kenlm %s", spec)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "kenlm", spec, "-d", tmp],
                check=True,
            )
            sdist = next(tmpd.glob("kenlm-*.tar.gz"))
        with tarfile.open(sdist) as tf:
            tf.extractall(tmpd, filter="data")
        src = next(p for p in tmpd.iterdir() if p.is_dir() and p.name.startswith("kenlm"))
        build = src / "build"
        build.mkdir()
        log.info("building lmplz + build_binary with %d jobs (about 1-2 minutes)", jobs)
        for cmd in (["cmake", "..", "-DCMAKE_BUILD_TYPE=Release"], ["make", f"-j{jobs}", *TOOLS]):
            r = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
            if r.returncode != 0:
                raise ModelError(
                    f"KenLM build step {' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-3000:]}\n"
                    f"are the build deps installed? apt-get install {DEBIAN_DEPS}"
                )
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for t in TOOLS:
            tmp_target = dest / f".{t}.tmp"
            shutil.copy2(build / "bin" / t, tmp_target)
            tmp_target.chmod(0o755)
            tmp_target.replace(dest / t)  # atomic: a concurrent build never leaves half a binary
            out.append(dest / t)
    log.info("installed %s", ", ".join(map(str, out)))
    return out


def run_lmplz(tokenized: Path, arpa: Path, order: int = 5, memory: str = "20%", tmp_dir: Path | None = None) -> None:
    """``lmplz -o <order> --discount_fallback`` (CCNet's settings) on a tokenised text file."""
    lmplz, _ = kenlm_tools()
    with open(tokenized, "rb") as fin, open(arpa, "wb") as fout:
        r = subprocess.run(
            [str(lmplz), "-o", str(order), "--discount_fallback", "-S", memory, "-T", str(tmp_dir or tempfile.gettempdir())],
            stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=False,
        )
    if r.returncode != 0:
        raise ModelError(f"lmplz failed on {tokenized}: {r.stderr.decode(errors='replace')[-2000:]}")


def run_build_binary(arpa: Path, binary: Path) -> None:
    _, build_binary = kenlm_tools()
    tmp = binary.with_name(binary.name + ".tmp")
    r = subprocess.run([str(build_binary), str(arpa), str(tmp)], capture_output=True)
    if r.returncode != 0:
        raise ModelError(f"build_binary failed on {arpa}: {r.stderr.decode(errors='replace')[-2000:]}")
    tmp.replace(binary)
