"""Executors run a function over many items; steps never know which one runs them."""

from __future__ import annotations

from ccpipe.config import ExecutorConfig
from ccpipe.executors.base import Executor


def make_executor(cfg: ExecutorConfig) -> Executor:
    if cfg.kind == "local":
        from ccpipe.executors.local import LocalExecutor

        return LocalExecutor(cfg)
    if cfg.kind == "ray":
        from ccpipe.executors.ray import RayExecutor  # type: ignore[import-not-found]

        return RayExecutor(cfg)
    raise ValueError(cfg.kind)
