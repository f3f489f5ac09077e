"""Errors that the CLI and the service turn into one clear line (exit 2 / HTTP 4xx)."""


class FmnistError(Exception):
    """A problem with the user's input: printed as one line, never as a traceback."""


class DataError(FmnistError, ValueError):
    """Unreadable or malformed data: the message names the file, row or field and what is wrong. A ValueError
    too, as scikit-learn and NumPy callers expect of bad input."""


class Unavailable(FmnistError):
    """Something this machine cannot provide (weights that cannot be downloaded offline, an extra that is not
    installed): a study reports the step as skipped instead of failing, and a rerun tries it again."""


def printable(text: object) -> str:
    """`text` safe for a terminal: control characters (escape sequences, carriage returns, bells) shown as \\xNN
    escapes instead of acting on the screen. For names and messages that come from files."""
    s = str(text)
    if s.isprintable():
        return s
    import unicodedata

    return "".join(c if c == "\n" or not unicodedata.category(c).startswith("C") else
                   repr(c)[1:-1] for c in s)


def require_extra(extra: str, *modules: str) -> None:
    """One clear line naming the extra to install when an optional dependency is missing or fails to import."""
    import importlib

    def problem(m: str) -> str | None:
        try:
            importlib.import_module(m)
        except ImportError:
            return "not installed"
        except Exception as e:  # noqa: BLE001  (a broken install fails in any way while importing)
            return f"fails to import: {type(e).__name__}"
        return None

    found = {m: why for m in modules if (why := problem(m))}
    if found:
        what = ", ".join(m if why == "not installed" else f"{m} ({why})" for m, why in found.items())
        raise Unavailable(f"this needs {what}, from fmnist's optional extra '{extra}': "
                          f"pip install 'fmnist[{extra}]'")


_RENAMED: set[str] = set()  # old names already noted in this process


def note_renamed(kind: str, old: str, new: str) -> str:
    """`new`, after one note on stderr (once a process) that `old` is a name of the previous release."""
    import sys

    if old not in _RENAMED:
        _RENAMED.add(old)
        print(f"note: {kind} '{old}' is now called '{new}'; the old name works for one more release", file=sys.stderr)
    return new
