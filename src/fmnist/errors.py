"""Errors that the CLI and the service turn into one clear line (exit 2 / HTTP 4xx)."""


class FmnistError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


class DataError(FmnistError):
    """Unreadable or malformed data: the message names the file, row or field and what is wrong."""


def require_extra(extra: str, *modules: str) -> None:
    """One clear line naming the extra to install when an optional dependency is missing."""
    import importlib.util

    def absent(m: str) -> bool:
        try:
            return importlib.util.find_spec(m) is None
        except (ImportError, ValueError):  # e.g. a module set to None in sys.modules: unusable
            return True

    missing = [m for m in modules if absent(m)]
    if missing:
        raise FmnistError(f"this needs {', '.join(missing)}, from fmnist's optional extra '{extra}': "
                          f"pip install 'fmnist[{extra}]'")
