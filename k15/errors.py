"""User-facing errors: each one is a single line that names the problem.

The command line prints the message of a K15Error without a traceback (unless `--debug`) and
exits non-zero. Anything else that escapes is a bug and keeps its traceback.
"""


class K15Error(Exception):
    """A problem with the user's input (config, data, checkpoint), explained in one line."""


class ConfigError(K15Error):
    """An invalid experiment config: unknown key, wrong type, impossible value."""


class DataError(K15Error):
    """Unreadable or malformed data, with the file (and line) at fault."""


class CheckpointError(K15Error):
    """A model or checkpoint directory that cannot be loaded."""
