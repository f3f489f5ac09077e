"""Errors that the CLI and the service turn into one clear line (exit 2 / HTTP 4xx)."""


class FmnistError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


class DataError(FmnistError):
    """Unreadable or malformed data: the message names the file, row or field and what is wrong."""
