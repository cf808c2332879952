"""Errors that ddadlib raises for bad input.

The command line prints a :class:`DataError` as one line (no traceback) and exits with status 2,
so every message must say which file is at fault and what is wrong with it.
"""


class DataError(Exception):
    """Bad or unusable input data: the message names the file and the problem."""


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says where and what
    to try, and the last checkpoint is kept."""


class ConfigError(ValueError):
    """An unusable setting (an unknown backbone, a device that is not there, ...)."""
