"""ccpipe.malloc: the allocator thresholds are raised where glibc is, and only then."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from ccpipe.malloc import tune_malloc; print(tune_malloc(), tune_malloc())"


def _run(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt thresholds are glibc's")
def test_tune_applies_once_and_can_be_turned_off():
    assert _run({"CCPIPE_MALLOC_TUNE": "1"}) == "True True"
    assert _run({"CCPIPE_MALLOC_TUNE": "0"}) == "False False"
