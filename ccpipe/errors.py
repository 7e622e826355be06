"""The project's exceptions. Each message says what to do about it."""


class CcpipeError(Exception):
    """Base class of every error ccpipe raises on purpose."""


class ConfigError(CcpipeError):
    """A configuration value or path is wrong; the message names it and the fix."""


class InputError(CcpipeError):
    """An input file or path cannot be used at all (not a per-record problem)."""


class ModelError(CcpipeError):
    """A model file is missing or unreadable; the message says how to build it."""
