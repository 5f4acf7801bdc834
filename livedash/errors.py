"""Errors an operator sees as one line: what happened and what to do."""


class LivedashError(Exception):
    """A failure with a message fit to print as is (no traceback)."""


class ConfigError(LivedashError):
    """The configuration file or an environment override holds a bad value."""
