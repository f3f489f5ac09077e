"""Files out: atomic writes (an interrupted run leaves the old file or the new one, never half of one), strict JSON,
and output directories checked before any work starts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
        os.replace(tmp, path)
    except OSError as e:
        from fmnist.errors import FmnistError

        raise FmnistError(f"{path}: cannot be written ({e.strerror or e}); an earlier file there is kept") from None
    except Exception as e:
        # writers report a failed write in their own types (torch.save's RuntimeError, safetensors'
        # SafetensorError): a full disk or a lost device is one line, the earlier file staying intact
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        full = shutil.disk_usage(path.parent).free < 1 << 20
        if type(e).__name__ in ("RuntimeError", "SafetensorError") and (
                full or any(w in text.lower() for w in ("write", "space", "ioerror", "storage", "iostream"))):
            text = "no space left on the device" if full else text
            from fmnist.errors import FmnistError

            raise FmnistError(f"{path}: cannot be written ({text[:160]}); an earlier file there is kept") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON atomically: NaN and infinity become null, NumPy values plain numbers and lists."""
    write_text(path, dumps(obj))


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (what `JSON.parse` and `jq` accept): NaN and infinity become null."""
    return json.dumps(_strict(obj), indent=indent, allow_nan=False) + ("\n" if indent else "")


def _strict(o: Any) -> Any:
    import dataclasses

    import numpy as np

    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(v) for v in o]
    if isinstance(o, np.ndarray):
        return _strict(o.tolist())
    if isinstance(o, np.generic):
        return _strict(o.item())
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return _strict(dataclasses.asdict(o))
    if o is None or isinstance(o, str | int | bool):
        return o
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def prepare_out_dir(path: str | os.PathLike, existing: str = "refuse", what: str = "--out",
                    mark_run: bool = False) -> Path:
    """Check that `path` can be a writable output directory, then create it; one clear error otherwise.

    existing: what to do with a directory that already holds files: "refuse" (a run directory must not be
    overwritten silently), "overwrite" (clear fmnist's own files from a directory fmnist marked as its run; any
    other directory is refused), "keep" (resume or add to it). mark_run: mark the directory as a run's.
    """
    from fmnist.errors import FmnistError
    from fmnist.rundir import MARKER, OWN_DIRS, RUN_FILES, RunDir

    if not str(path).strip():
        raise FmnistError(f"{what}: an empty path; give a directory (or leave the option out for the default)")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FmnistError(f"{what} {p}: exists and is not a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FmnistError(f"{what} {p}: cannot be created, {parent} is a file")
            break
    if p.is_dir() and any(p.iterdir()) and existing != "keep":
        marked = RunDir(p).is_marked()
        if existing == "refuse":
            raise FmnistError(f"{what} {p}: already holds " + ("a run" if marked else "files")
                              + "; give --overwrite to replace it" + (", --resume to continue it" if marked else "")
                              + ", or another --out")
        if not marked:
            looks = any((p / f).exists() for f in RUN_FILES)
            raise FmnistError(f"{what} {p}: not a directory fmnist marked as its run (no {MARKER}"
                              + ("; a run saved by an older fmnist, or another program's files" if looks else "")
                              + "); refusing to delete anything in it: remove it yourself or give another --out")
        for child in p.iterdir():
            if child.is_dir() and not child.is_symlink():
                if child.name in OWN_DIRS:
                    shutil.rmtree(child)
            elif RunDir.is_own(child.name):
                child.unlink()
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".fmnist-write-test-")
        os.close(fd)
        os.unlink(probe)
        if mark_run and not RunDir(p).is_marked():
            RunDir(p).marker.write_text("a fmnist run directory: `--overwrite` may clear fmnist's own files here\n")
    except OSError as e:
        raise FmnistError(f"{what} {p}: cannot write there ({e.strerror or e})") from None
    return p


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)
