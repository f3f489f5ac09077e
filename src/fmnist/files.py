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


# files that mark a directory as a training run's: only such a directory is ever cleared
RUN_FILES = ("config.json", "model.safetensors", "metrics.json", "history.csv", "train_state.pt")


def prepare_out_dir(path: str | os.PathLike, existing: str = "refuse", what: str = "--out") -> Path:
    """Check that `path` can be a writable output directory, then create it; one clear error otherwise.

    existing: what to do with a directory that already holds files: "refuse" (a run directory must not be
    overwritten silently), "overwrite" (clear it first; only a directory holding a run's files is cleared),
    "keep" (resume or add to it).
    """
    from fmnist.errors import FmnistError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FmnistError(f"{what} {p}: exists and is not a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FmnistError(f"{what} {p}: cannot be created, {parent} is a file")
            break
    if p.is_dir() and any(p.iterdir()) and existing != "keep":
        is_run = any((p / f).exists() for f in RUN_FILES)
        if existing == "refuse":
            raise FmnistError(f"{what} {p}: already holds " + ("a run" if is_run else "files")
                              + "; give --overwrite to replace it" + (", --resume to continue it" if is_run else "")
                              + ", or another --out")
        if not is_run:
            raise FmnistError(f"{what} {p}: holds files that are not a fmnist run; refusing to delete them")
        for child in p.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".fmnist-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise FmnistError(f"{what} {p}: cannot write there ({e.strerror or e})") from None
    return p


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)
