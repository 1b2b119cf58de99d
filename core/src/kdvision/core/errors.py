"""User-facing errors.

A :class:`KDVisionError` is raised for bad input (missing files, wrong checkpoints, unknown names, invalid
hyper-parameters). Entry scripts print its message as one line on stderr and exit non-zero; ``--debug`` shows the
traceback instead.
"""


class KDVisionError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class CheckpointError(KDVisionError):
    """A checkpoint is missing, unreadable or does not match the model it is loaded into."""


class DataError(KDVisionError):
    """A dataset root, split or file is missing or malformed."""


class ConfigError(KDVisionError):
    """An invalid configuration value or an unknown registry name."""
