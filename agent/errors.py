"""Error types that carry a message meant for the person at the terminal.

CLIs catch :class:`FerError` and print its message on one line (exit 2);
anything else is a bug and keeps its traceback.
"""


class FerError(Exception):
    """A problem with user input (file, key, row, credentials) - not a bug."""


class ManifestError(FerError):
    """The model bundle or its manifest is missing, malformed or tampered."""


class ConfigError(FerError):
    """The agent configuration has an unknown key or a bad value."""
