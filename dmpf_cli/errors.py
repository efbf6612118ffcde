"""The one exception family the CLI turns into a one-line ``error: …`` and exit code 2."""


class DmpfError(Exception):
    """A user-facing problem (bad input, unknown name, missing file): never shown as a traceback."""
