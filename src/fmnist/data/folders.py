"""Folders of pictures: one subfolder per class (optionally under train/ and test/), any size and colour.

The layout torchvision's `ImageFolder`, Keras' `image_dataset_from_directory` and Ultralytics' classify trainer
read. Every picture is prepared to 28x28 the way `fmnist predict` prepares one (the dataset's own recipe, or
`fit`/`none`), in parallel threads (Pillow decodes with the GIL released), with a progress bar; the result is
cached once, keyed by the files' names, sizes and times and the preparation, so the next command starts at once.
Unreadable files are skipped, counted and named.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fmnist.data.readers import MAX_CLASSES, RawSplit, check_class_names
from fmnist.errors import DataError
from fmnist.files import atomic_path

PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
TEST_SHARE = 1 / 7  # held out as the test split when there is no test/ folder: Fashion-MNIST's 10,000 of 70,000
CACHE_VERSION = 1  # part of the cache key: a change to how pictures are read makes new entries


def _pictures(d: Path) -> Iterator[os.DirEntry]:
    """Every picture file under `d`; hidden files and folders left out. os.scandir rather than Path.rglob: one
    system call a file, no path objects (70,000 files in a blink)."""
    stack = [str(d)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in PICTURE_SUFFIXES and e.is_file():
                    yield e


def _scan(d: Path) -> list[tuple[str, int, int]]:
    """Every picture under `d` as (path, size, mtime_ns), sorted by path."""
    return sorted((e.path, (st := e.stat()).st_size, st.st_mtime_ns) for e in _pictures(d))


def _has_pictures(d: Path) -> bool:
    return next(_pictures(d), None) is not None


def _class_dirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".") and _has_pictures(c))


def is_folder_dataset(d: Path) -> bool:
    """Whether `d` holds class subfolders of pictures (directly, or under train/)."""
    if not d.is_dir():
        return False
    root = d / "train" if (d / "train").is_dir() else d
    try:
        return bool(_class_dirs(root))
    except OSError:
        return False


Files = list[tuple[str, int, int]]  # (path, size, mtime_ns) of each picture


def _layout(d: Path) -> tuple[dict[str, Files], dict[str, Files] | None, tuple[str, ...]]:
    """The pictures of each class of the train and (if present) test folders, and the class names."""
    split = (d / "train").is_dir() and _class_dirs(d / "train")
    train_root = d / "train" if split else d
    train = {c.name: _scan(c) for c in _class_dirs(train_root)}
    names = check_class_names(sorted(train), f"{train_root} (its subfolder names)")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{train_root}: {len(names):,} class folders; fmnist takes at most {MAX_CLASSES:,} classes")
    test = None
    if split and (d / "test").is_dir():
        test = {c.name: _scan(c) for c in _class_dirs(d / "test")}
        unknown = sorted(set(test) - set(names))
        if unknown:
            raise DataError(f"{d / 'test'}: class folder(s) {', '.join(unknown[:5])} have no folder in "
                            f"{train_root}; the test classes must be training classes")
    return train, test, names


def _cache_file(d: Path, files: Files, preprocess: str) -> Path:
    h = hashlib.sha1(f"{CACHE_VERSION}\n{d.resolve()}\n{preprocess}\n".encode())
    h.update("\n".join(f"{p}\0{size}\0{mtime}" for p, size, mtime in files).encode())
    root = Path(os.environ.get("FMNIST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "fmnist")
    return root / "folders" / f"{h.hexdigest()[:20]}.npz"


def _read_one(path: str, preprocess: str) -> np.ndarray | str:
    from fmnist.predict import image_to_array

    try:
        return image_to_array(path, name=os.path.basename(path), preprocess=preprocess)
    except DataError as e:
        return str(e)


def read_folder(d: str | os.PathLike, preprocess: str = "dataset", progress: bool | None = None,
                seed: int = 0) -> tuple[RawSplit, RawSplit | None, list[str]]:
    """The train and test splits of a folder dataset, and one note per thing said to the user (the split made,
    the files skipped, the cache used). Without a test/ folder a stratified seventh is held out as the test split."""
    from fmnist.choices import PREPROCESS

    d = Path(d)
    if preprocess not in PREPROCESS:
        raise DataError(f"preprocess '{preprocess}' unknown; choose from {', '.join(PREPROCESS)}")
    train, test, names = _layout(d)
    index = {n: i for i, n in enumerate(names)}
    files = [(f, index[c], "train") for c, fs in train.items() for f in fs]
    files += [(f, index[c], "test") for c, fs in (test or {}).items() for f in fs]
    cache = _cache_file(d, [f for f, _, _ in files], preprocess)
    paths = [f[0] for f, _, _ in files]
    notes: list[str] = []
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            images, ok, errors = z["images"], z["ok"], [str(e) for e in z["errors"]]
        notes.append(f"{d}: {len(files):,} pictures read from the cache ({cache})")
    else:
        images, ok, errors = _read_all(d, paths, preprocess, progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=images, ok=ok, errors=np.array(errors, dtype=str))
    if errors:
        notes.append(f"{d}: skipped {len(errors):,} unreadable file(s) of {len(files):,}: " + "; ".join(errors[:5])
                     + ("; ..." if len(errors) > 5 else ""))
    labels = np.array([y for _, y, _ in files], dtype=np.int64)
    where = np.array([s for _, _, s in files])
    if not ok.any():
        raise DataError(f"{d}: none of the {len(files):,} pictures could be read ({errors[0] if errors else ''})")

    def split(mask: np.ndarray, source: str) -> RawSplit:
        n = int(mask.sum())
        return RawSplit(images[mask], labels[mask], source, np.zeros(n, bool), np.zeros(n, bool),
                        class_names=names)

    usable = ok
    if test is not None:
        return split(usable & (where == "train"), str(d / "train")), split(usable & (where == "test"),
                                                                          str(d / "test")), notes
    from sklearn.model_selection import train_test_split

    idx = np.flatnonzero(usable)
    counts = np.bincount(labels[idx], minlength=len(names))
    if counts.min() < 2:
        small = names[int(np.argmin(counts))]
        raise DataError(f"{d}: class '{small}' has {counts.min()} readable picture(s); holding out a stratified "
                        "test split needs 2 of every class (or give train/ and test/ folders)")
    tr, te = train_test_split(idx, test_size=max(TEST_SHARE, len(names) / len(idx)), random_state=seed,
                              stratify=labels[idx])
    notes.append(f"{d}: no train/ and test/ folders, so a stratified {len(te) / len(idx):.0%} of the pictures "
                 f"({len(te):,}, seed {seed}) is the test split; the other {len(tr):,} train")
    in_test = np.zeros(len(files), bool)
    in_test[te] = True
    return split(usable & ~in_test, str(d)), split(in_test, f"{d} (held-out test split)"), notes


def _read_all(d: Path, files: list[str], preprocess: str,
              progress: bool | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every picture prepared to 28x28 (zeros where unreadable), which were read, and why the others were not."""
    from tqdm.auto import tqdm

    images = np.zeros((len(files), 28, 28), np.uint8)
    ok = np.zeros(len(files), bool)
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda f: _read_one(f, preprocess), files, chunksize=64)
        for i, r in enumerate(tqdm(results, total=len(files), desc=f"reading {d.name or d}", unit="picture",
                                   disable=None if progress is None else not progress, leave=False)):
            if isinstance(r, str):
                errors.append(f"{os.path.relpath(files[i], d)}: {r.split(': ', 1)[-1]}")
            else:
                images[i], ok[i] = r, True
    return images, ok, errors
