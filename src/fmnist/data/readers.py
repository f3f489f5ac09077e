"""Readers for the formats people have: official IDX files (gzipped or not), Kaggle CSV, NumPy .npz.

Every reader returns `RawSplit`s: uint8 images (N, 28, 28), int64 labels (N,), and per-row masks of the cells
that could not be used (missing / invalid), so the audit can report them and cleaning can drop them.
Structural problems (wrong magic number, truncated file, 783 pixel columns, ...) raise `DataError` with one line
that names the file and what is wrong.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist.errors import DataError

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SIZE = 28
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# the most classes a dataset may have: beyond every 28x28 dataset in use (QuickDraw's 345), and far below a label
# column read by mistake (a row number, a pixel)
MAX_CLASSES = 1000
# the official Fashion-MNIST splits, recognised by their content (`content_fingerprint`) in any format and order:
# their class names are the dataset's own
FASHION_FINGERPRINTS = {"227df44455933369": "train", "4fe7eba17bd24188": "test"}
DEFAULT_DATA_DIRS = ("./data", "/usr/share/datasets/fashion-mnist")
HOW_TO_GET_DATA = (
    "get the official IDX files with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, installs to "
    "/usr/share/datasets/fashion-mnist) or from the zalandoresearch/fashion-mnist repository (data/fashion), "
    "then pass --data DIR or set FMNIST_DATA"
)


@dataclass
class RawSplit:
    """One split as read, before cleaning. Rows flagged in `missing`/`invalid` hold zeros in `images`."""

    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64; -1 where the label cell is missing or invalid
    source: str  # file the split came from
    missing: np.ndarray  # (N,) bool: a cell is empty
    invalid: np.ndarray  # (N,) bool: a cell is not a number, not an integer, or out of range
    # what was wrong, for the report: problem -> first few row descriptions ("line 7: pixel12 is 'abc'")
    examples: dict[str, list[str]] = field(default_factory=dict)
    row_offset: int = 0  # file line of row 0 (2 for a CSV with a header), 0 for formats without lines
    notes: list[str] = field(default_factory=list)  # what reading changed, said to the user ("scaled 0..1 ...")
    class_names: tuple[str, ...] | None = None  # names the format itself gives (a folder dataset's subfolders)

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------------------------------- IDX
_IDX_TYPES = {0x08: np.uint8}


def _open_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path: str | os.PathLike, expected_ndim: int) -> np.ndarray:
    """Read an IDX file (ubyte) with `expected_ndim` dimensions, checking magic number and length."""
    path = Path(path)
    buf = _open_maybe_gzip(path)
    if len(buf) == 0:
        raise DataError(f"{path}: empty file")
    if len(buf) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(buf)} bytes)")
    zero, dtype_code, ndim = buf[0] << 8 | buf[1], buf[2], buf[3]
    magic = int.from_bytes(buf[:4], "big")
    if zero != 0 or dtype_code not in _IDX_TYPES or ndim != expected_ndim:
        want = 0x0800 | expected_ndim
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08X} (expected 0x{want:08X}, "
                        f"unsigned bytes with {expected_ndim} dimension{'s' if expected_ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    n_expected = int(np.prod(dims))
    n_have = len(buf) - header
    if n_have < n_expected:
        raise DataError(f"{path}: truncated: header says {'x'.join(map(str, dims))} = {n_expected} values, "
                        f"file holds {n_have}")
    if n_have > n_expected:
        raise DataError(f"{path}: {n_have - n_expected} bytes after the {n_expected} values the header announces")
    return np.frombuffer(buf, dtype=np.uint8, count=n_expected, offset=header).reshape(dims)


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int | None = None) -> RawSplit:
    """Read an images file and its labels file into a RawSplit (labels of `num_classes` classes; None: up to
    MAX_CLASSES)."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1).astype(np.int64)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels")
    top = (num_classes or MAX_CLASSES) - 1
    bad = (labels < 0) | (labels > top)
    examples = {}
    if bad.any():
        examples["invalid"] = [f"item {i}: label {labels[i]} is outside 0..{top}" for i in np.flatnonzero(bad)[:5]]
    labels = np.where(bad, -1, labels)
    n = len(labels)
    return RawSplit(images.copy(), labels, str(images_path), np.zeros(n, bool), bad, examples)


# ----------------------------------------------------------------------------------------------------- CSV
MAX_CSV_LINE = 65536  # a header or row of 785 fields is under 8 KB: a longer first line is not this format


def _check_first_line(path: Path) -> None:
    """Refuse a file whose first line is far longer than a header or row of 785 fields before pandas reads it all
    (a file on one line would otherwise be parsed whole, slowly and in much memory, before being refused)."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            line = f.readline(MAX_CSV_LINE + 1)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable text CSV file ({type(e).__name__})") from None
    if len(line) > MAX_CSV_LINE and not line.endswith(b"\n"):
        raise DataError(f"{path}: line 1 is over {MAX_CSV_LINE // 1024} KB without a line break ("
                        f"{line.count(b',') + 1:,}+ fields); expected label,pixel1..pixel784 (785 fields a line)")


def read_csv(path: str | os.PathLike, class_names: tuple[str, ...] | None = None) -> RawSplit:
    """Read a Kaggle-style CSV (`label,pixel1..pixel784`): 60,000 rows in a few seconds.

    Labels may be class numbers or, given `class_names` (a classes.txt), class names (matched ignoring case and
    surrounding spaces). Without names, labels are numbers below MAX_CLASSES.
    """
    top = (len(class_names) if class_names else MAX_CLASSES) - 1
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    _check_first_line(path)

    def parse(**kw: object) -> pd.DataFrame:
        try:
            # dtype=str would be much slower; the C parser gives numeric columns, and object columns only where a
            # cell is not a number, which we coerce below and report. utf-8-sig: a BOM is not part of "label".
            return pd.read_csv(path, low_memory=False, encoding="utf-8-sig", **kw)  # .csv.gz: pandas unzips
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: empty file") from None
        except pd.errors.ParserError as e:
            raise DataError(f"{path}: malformed CSV: {str(e).strip()}") from None
        except (UnicodeDecodeError, EOFError, OSError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a readable text CSV file ({type(e).__name__})") from None

    df = parse()
    row_offset = 2  # file line of the first data row
    cols = [str(c).strip() for c in df.columns]
    if "label" not in cols and len(cols) == N_PIXELS + 1 and \
            pd.to_numeric(pd.Series(cols), errors="coerce").notna().all():
        # no header line (label first, then 784 pixels): the first line is data
        df = parse(header=None, names=["label", *[f"pixel{i}" for i in range(1, N_PIXELS + 1)]])
        cols, row_offset = list(df.columns), 1
    if "label" not in cols:
        first = cols[0] if len(cols) == 1 else ", ".join(cols[:3]) + (", ..." if len(cols) > 3 else "")
        sep = next((f" (the file looks separated by {c!r}; fmnist reads comma-separated CSV)"
                    for c in (";", "\t", "|") if len(cols) == 1 and c in cols[0]), "")
        raise DataError(f"{path}: no 'label' column in the header (expected label,pixel1..pixel784; found "
                        f"{first[:60]}{'...' if len(first) > 60 else ''}){sep}")
    label_col = df.columns[cols.index("label")]
    pixel_cols = [c for c in df.columns if c is not label_col]
    if len(pixel_cols) != N_PIXELS:
        raise DataError(f"{path}: {len(pixel_cols)} pixel columns, expected {N_PIXELS} (28x28) besides 'label'")
    if len(df) == 0:
        raise DataError(f"{path}: header but no data rows")

    if label_col == df.columns[0] and all(dt.kind in "iu" for dt in df.dtypes):
        # the common case: every cell an integer (no empty or text cell) -> one int array, range checks only
        arr = df.to_numpy()  # (N, 785) int64
        bad_label = (arr[:, 0] < 0) | (arr[:, 0] > top)
        bad_pix = ((arr[:, 1:] < 0) | (arr[:, 1:] > 255)).any(axis=1)
        if not (bad_label.any() or bad_pix.any()):
            n = len(arr)
            return RawSplit(arr[:, 1:].astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
                            arr[:, 0].astype(np.int64), str(path), np.zeros(n, bool), np.zeros(n, bool), {},
                            row_offset=row_offset)
    ordered = df[[label_col, *pixel_cols]]
    examples: dict[str, list[str]] = {}
    names = ["label", *[str(c) for c in pixel_cols]]
    missing_cells = ordered.isna().to_numpy()  # empty cells, before coercion
    nonnumeric = np.zeros(ordered.shape, dtype=bool)
    object_cols = [j for j, dt in enumerate(ordered.dtypes) if not pd.api.types.is_numeric_dtype(dt)]
    notes = []
    if object_cols:  # a column with any text cell: coerce it, and report the cells that were not numbers
        ordered = ordered.copy()
        for j in object_cols:
            col = ordered.columns[j]
            text = ordered[col].astype(str).str.strip()
            coerced = pd.to_numeric(text, errors="coerce")
            if j == 0 and not class_names and coerced.isna().sum() > missing_cells[:, 0].sum():
                first = text[coerced.isna() & ~ordered[col].isna()].iloc[0]
                raise DataError(f"{path}: labels are text ({first!r:.40}, ...) and no classes.txt names the "
                                "classes: put one beside the data (one name per line, in class-number order), or "
                                "give class numbers")
            if j == 0:  # labels given as class names ("T-shirt/top"): their index in class_names
                given = class_names or ()
                # ignoring case unless two names differ only by case (EMNIST's 'a' and 'A' are two classes)
                fold = len({n.lower() for n in given}) == len(given)
                index = {(n.strip().lower() if fold else n.strip()): i for i, n in enumerate(given)}
                by_name = (text.str.lower() if fold else text).map(index)
                if by_name.notna().any():
                    notes.append(f"{path}: {int(by_name.notna().sum()):,} labels given as class names, read as "
                                 "their class numbers")
                coerced = coerced.fillna(by_name)
            nonnumeric[:, j] = coerced.isna().to_numpy() & ~missing_cells[:, j]
            ordered[col] = coerced
    values = ordered.to_numpy(dtype=np.float64, na_value=np.nan)  # (N, 785), one bulk conversion
    raw_cells = df[[label_col, *pixel_cols]]

    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        non_integer = finite & (values != np.round(values))
        out_of_range = np.zeros_like(finite)
        out_of_range[:, 0] = finite[:, 0] & ((values[:, 0] < 0) | (values[:, 0] > top))
        out_of_range[:, 1:] = finite[:, 1:] & ((values[:, 1:] < 0) | (values[:, 1:] > 255))
    not_finite = ~finite & ~missing_cells & ~nonnumeric  # inf, -inf or nan written out
    invalid_cells = nonnumeric | non_integer | out_of_range | not_finite
    missing = missing_cells.any(axis=1)
    invalid = invalid_cells.any(axis=1)

    def describe(mask: np.ndarray, what: str) -> list[str]:
        rows, cs = np.nonzero(mask)
        out = []
        for r, c in zip(rows[:5], cs[:5], strict=True):
            cell = raw_cells.iat[r, c]
            cell = cell.item() if isinstance(cell, np.generic) else cell  # 12.5, not np.float64(12.5)
            out.append(f"line {r + row_offset}: {names[c]} {what}" + ("" if what == "is empty" else f" ({cell!r})"))
        return out

    for key, mask, what in (
        ("missing", missing_cells, "is empty"),
        ("non_numeric", nonnumeric, "is not a number"),
        ("non_integer", non_integer, "is not an integer"),
        ("not_finite", not_finite, "is not a finite number"),
        ("label_out_of_range", out_of_range[:, :1], f"is outside 0..{top}"),
    ):
        if mask.any():
            examples[key] = describe(mask, what)
    pix_oor = np.zeros_like(out_of_range)
    pix_oor[:, 1:] = out_of_range[:, 1:]
    if pix_oor.any():
        examples["pixel_out_of_range"] = describe(pix_oor, "is outside 0..255")

    usable = ~(missing | invalid)
    images = np.zeros((len(df), N_PIXELS), dtype=np.uint8)
    images[usable] = values[usable, 1:].astype(np.uint8)
    labels = np.full(len(df), -1, dtype=np.int64)
    labels[usable] = values[usable, 0].astype(np.int64)
    if examples.get("non_numeric"):  # a text label that is no class name: say which names would be read
        examples["non_numeric"] = [e + (f": neither 0..{top} nor a class name ({', '.join(class_names or ())})"
                                        if e.split(": ", 1)[1].startswith("label ") else "")
                                   for e in examples["non_numeric"]]
    return RawSplit(images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), labels, str(path), missing, invalid, examples,
                    row_offset=row_offset, notes=notes)


# ----------------------------------------------------------------------------------------------------- NPZ
def read_npz(path: str | os.PathLike, num_classes: int | None = None) -> tuple[RawSplit, RawSplit | None]:
    """Read a .npz with x_train, y_train[, x_test, y_test] (what keras.datasets users save)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # .npz files are zip archives
                raise DataError(f"{path}: not a .npz file (no zip archive inside)")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        with zipfile.ZipFile(path) as zf:  # every member's header against its size, before numpy allocates
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as member:
                        check_npy_header(member, info.file_size, f"{path}: {info.filename[:-4]}")
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # BadZipFile: a damaged or truncated archive
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    with z:
        keys = set(z.files)
        if not {"x_train", "y_train"} <= keys:
            raise DataError(f"{path}: needs arrays x_train and y_train (found {', '.join(sorted(keys)) or 'none'})")
        splits = []
        for name in ("train", "test"):
            if f"x_{name}" not in keys:
                splits.append(None)
                continue
            if f"y_{name}" not in keys:
                raise DataError(f"{path}: x_{name} without y_{name}")
            try:
                x, y = z[f"x_{name}"], z[f"y_{name}"]
            except ValueError:  # numpy refuses object arrays without allow_pickle
                raise DataError(f"{path}: x_{name} or y_{name} holds Python objects, not numbers (fmnist never "
                                "unpickles data files); save numeric arrays, e.g. np.savez(..., x_train="
                                "x.astype('uint8'))") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: corrupt array x_{name} or y_{name} ({e})") from None
            splits.append(from_arrays(x, y, f"{path}[{name}]", num_classes))
    return splits[0], splits[1]


def check_npy_header(f: object, size: int, where: str) -> None:
    """Refuse an .npy stream whose header declares more values than its `size` bytes hold (a truncated or crafted
    file would otherwise make numpy reserve the declared size first), or Python objects (never unpickled)."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(f)
        shape, _, dtype = npy.read_array_header_1_0(f) if version == (1, 0) else npy.read_array_header_2_0(f)
    except (ValueError, EOFError) as e:
        raise DataError(f"{where}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects, not numbers (fmnist never unpickles data files); save "
                        "numeric arrays, e.g. np.savez(..., x_train=x.astype('uint8'))")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > size:
        raise DataError(f"{where}: its header declares {'x'.join(map(str, shape))} {dtype} values ({need:,} bytes) "
                        f"but the file holds {size:,} bytes: truncated, or not written by numpy")


def from_arrays(x: np.ndarray, y: np.ndarray, source: str, num_classes: int | None = None) -> RawSplit:
    """A RawSplit from arrays as people hold them: images (N, 28, 28), (N, 784) or (N, 28, 28, 1) of 0..255 or
    0..1 floats; labels (N,) class numbers (below `num_classes`; None: below MAX_CLASSES) or one-hot rows."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 2 and x.shape[1] == N_PIXELS:
        x = x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        colour = " (colour images: convert them to grayscale first)" if x.ndim == 4 and x.shape[-1] in (3, 4) else ""
        raise DataError(f"{source}: images have shape {x.shape}, expected (N, 28, 28){colour}")
    y = np.asarray(y)
    notes = []
    if y.ndim == 2 and len(y) == len(x) and y.shape[1] == (num_classes or y.shape[1]) and y.shape[1] >= 2 and \
            np.issubdtype(y.dtype, np.number) and \
            np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)  # one-hot rows (keras.utils.to_categorical): the index of the 1
        notes.append(f"{source}: one-hot labels read as class numbers")
    y = y.reshape(-1)
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        raise DataError(f"{source}: labels have dtype {y.dtype}, expected integers")
    if len(x):
        x, note = pixel_scale(x, source)
        notes += [note] if note else []
    xf = x.astype(np.float64) if x.dtype != np.uint8 else x
    examples = {}
    if x.dtype != np.uint8:
        bad_px = ~np.isfinite(xf) | (xf < 0) | (xf > 255) | (xf != np.round(xf))
        bad_px = bad_px.reshape(len(x), -1).any(axis=1)
    else:
        bad_px = np.zeros(len(x), bool)
    yf = y.astype(np.float64)
    top = (num_classes or MAX_CLASSES) - 1
    bad_y = ~np.isfinite(yf) | (yf < 0) | (yf > top) | (yf != np.round(yf))
    invalid = bad_px | bad_y
    if bad_px.any():
        examples["pixel_out_of_range"] = [f"item {i}: a pixel is outside 0..255" for i in np.flatnonzero(bad_px)[:5]]
    if bad_y.any():
        examples["label_out_of_range"] = [f"item {i}: label {y[i]} is outside 0..{top}"
                                          for i in np.flatnonzero(bad_y)[:5]]
    images = np.where(invalid[:, None, None], 0, np.nan_to_num(xf)).astype(np.uint8)
    labels = np.where(invalid, -1, np.nan_to_num(yf)).astype(np.int64)
    return RawSplit(images, labels, source, np.zeros(len(x), bool), invalid, examples, notes=notes)


def pixel_scale(a: np.ndarray, name: str) -> tuple[np.ndarray, str | None]:
    """Pixels as 0..255 values, and a note when they were rescaled; one clear error when the scale is unknown.

    Float arrays whose values all lie in 0..1 are 0..1 intensities (what many Keras users save after dividing by
    255): they are multiplied by 255 and the note says so. Booleans, negative values (standardized data) and
    integer images holding only 0 and 1 (0..1 data or an almost black 0..255 image?) are refused, never guessed.
    """
    a = np.asarray(a)
    if a.dtype == bool:
        raise DataError(f"{name}: booleans are not pixel values; give 0..255 integers or 0..1 floats")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{name}: pixel values must be numbers (found {a.dtype.name} values)")
    if a.size == 0 or a.dtype == np.uint8:
        return a, None
    af = a.astype(np.float64)
    if not (finite := np.isfinite(af)).all():
        where = np.unravel_index(int(np.flatnonzero(~finite.reshape(-1))[0]), af.shape)
        raise DataError(f"{name}: pixels must be finite numbers; the value at index {list(map(int, where))} is "
                        f"{af[where]}")
    lo, hi = float(af.min()), float(af.max())
    if lo < 0:
        raise DataError(f"{name}: pixels range {lo:.3g}..{hi:.3g}; negative values look standardized: give raw "
                        "0..255 integers or 0..1 floats")
    if hi > 255:
        raise DataError(f"{name}: pixels range {lo:.3g}..{hi:.3g}; expected 0..255 (or 0..1 floats)")
    if np.issubdtype(a.dtype, np.floating) and hi <= 1:
        return np.rint(af * 255), f"{name}: float pixels in 0..1, scaled to 0..255"
    if np.issubdtype(a.dtype, np.integer) and hi == 1:
        raise DataError(f"{name}: every pixel is 0 or 1: for 0..1 intensities give floats (e.g. 1.0) or multiply "
                        "by 255; a 0..255 image this dark cannot be told apart")
    return a, None


# ---------------------------------------------------------------------------------------------- locating
def _find_idx(d: Path, prefix: str, kind: str) -> Path | None:
    # official names: train-images-idx3-ubyte.gz; MNIST mirrors also use train-images.idx3-ubyte
    ndim = 3 if kind == "images" else 1
    for cand in sorted(d.glob(f"{prefix}-{kind}*idx{ndim}-ubyte*")):
        if cand.suffix in ("", ".gz") and cand.is_file():
            return cand
    return None


def _idx_in(d: Path) -> dict[str, tuple[Path, Path]] | None:
    found = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        im, lb = _find_idx(d, prefix, "images"), _find_idx(d, prefix, "labels")
        if im and lb:
            found[split] = (im, lb)
        elif im or lb:
            missing = "labels" if im else "images"
            raise DataError(f"{d}: found {(im or lb).name} but no matching {prefix}-{missing} IDX file")
    return found or None


def _csvs_in(d: Path) -> tuple[Path, Path | None] | None:
    train = sorted(d.glob("*train*.csv")) + sorted(d.glob("*train*.csv.gz"))
    test = sorted(d.glob("*test*.csv")) + sorted(d.glob("*test*.csv.gz"))
    if train:
        return train[0], (test[0] if test else None)
    return None


def has_data(d: Path) -> bool:
    """Whether directory `d` holds a dataset in any supported format."""
    if not d.is_dir():
        return False
    try:
        return bool(_idx_in(d) or _csvs_in(d) or list(d.glob("*.npz")))
    except DataError:
        return True  # something is there, half of it broken: let the reader report it


def locate(data: str | os.PathLike | None) -> Path:
    """The data path to use: `data`, else $FMNIST_DATA, ./data, /usr/share/datasets/fashion-mnist."""
    if data is not None:
        p = Path(data)
        if not p.exists():
            raise DataError(f"{p}: no such file or directory; {HOW_TO_GET_DATA}")
        return p
    env = os.environ.get("FMNIST_DATA")
    if env:
        p = Path(env)
        if not p.exists():
            raise DataError(f"FMNIST_DATA={env}: no such file or directory")
        return p
    for d in DEFAULT_DATA_DIRS:
        if has_data(Path(d)):
            return Path(d)
    raise DataError(f"no Fashion-MNIST data found in {', '.join(DEFAULT_DATA_DIRS)}; {HOW_TO_GET_DATA}")


def _read_file(p: Path, class_names: tuple[str, ...] | None) -> tuple[RawSplit, RawSplit | None]:
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    if suffix.lower() in (".csv", ".csv.gz"):
        return read_csv(p, class_names), None
    if p.suffix.lower() == ".npz":
        return read_npz(p, len(class_names) if class_names else None)
    raise DataError(f"{p}: unsupported data file type '{suffix}' (use an IDX directory, a .csv[.gz] or a .npz)")


def read_raw(data: str | os.PathLike | None = None, test_data: str | os.PathLike | None = None,
             class_names: tuple[str, ...] | None = None) -> tuple[RawSplit, RawSplit | None, str]:
    """Read train and (if present) test splits from any supported source; returns (train, test, source).
    `class_names` (a classes.txt's) bound the labels; without them labels are numbers below MAX_CLASSES."""
    p = locate(data)
    class_names = class_names or read_class_names(p)
    k = len(class_names) if class_names else None
    if p.is_dir():
        idx = _idx_in(p)
        if idx and "train" in idx:
            train = read_idx_pair(*idx["train"], k)
            test = read_idx_pair(*idx["test"], k) if "test" in idx else None
        elif (csvs := _csvs_in(p)) is not None:
            train = read_csv(csvs[0], class_names)
            test = read_csv(csvs[1], class_names) if csvs[1] else None
        elif npz := sorted(p.glob("*.npz")):
            train, test = read_npz(npz[0], k)
        else:
            raise DataError(f"{p}: no data here (looked for train-images-idx3-ubyte[.gz], *train*.csv, *.npz); "
                            f"{HOW_TO_GET_DATA}")
    else:
        train, test = _read_file(p, class_names)
    if test_data is not None:
        tp = Path(test_data)
        if not tp.exists():
            raise DataError(f"{tp}: no such file or directory")
        check_same_classes(p, tp, class_names)
        if tp.is_dir():
            test, _, _ = read_raw(tp, class_names=class_names)
        else:
            t_train, t_test = _read_file(tp, class_names)
            test = t_test if t_test is not None else t_train
    return train, test, str(p)


MAX_NAME_LENGTH = 100


def check_class_names(names: object, where: str) -> tuple[str, ...]:
    """Class names as fmnist accepts them, from any source (classes.txt, a checkpoint someone sent): at least two,
    each a line of printable text (no control characters: a name reaches terminals, pictures and web pages)
    of at most MAX_NAME_LENGTH characters, no two alike ('a' and 'A' are two: EMNIST has both). One clear line
    otherwise."""
    import unicodedata

    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: class names must be a list of text")
    if len(names) < 2:
        raise DataError(f"{where}: {len(names)} class name(s); a classifier needs at least 2")
    seen: dict[str, int] = {}
    for i, n in enumerate(names, start=1):
        if not n.strip() or n != n.strip():
            raise DataError(f"{where}: class name {i} ({n!r:.40}) is empty or has spaces around it")
        if len(n) > MAX_NAME_LENGTH:
            raise DataError(f"{where}: class name {i} is {len(n)} characters long (at most {MAX_NAME_LENGTH})")
        bad = next((c for c in n if unicodedata.category(c).startswith("C")), None)
        if bad is not None:
            raise DataError(f"{where}: class name {i} ({n!r:.40}) holds the control character U+{ord(bad):04X}; "
                            "names are printable text")
        if n in seen:
            raise DataError(f"{where}: class name '{n}' appears twice (names {seen[n]} and {i}); "
                            "each class needs its own name")
        seen[n] = i
    return tuple(names)


def _classes_file(source: str | os.PathLike) -> Path:
    p = Path(source)
    return (p if p.is_dir() else p.parent) / "classes.txt"


def read_class_names(source: str | os.PathLike) -> tuple[str, ...] | None:
    """The class names of a `classes.txt` beside the data (one per line, in class-number order; at least 2), or
    None when there is none (`resolve_class_names` then decides)."""
    f = _classes_file(source)
    if f.is_file():
        try:
            names = tuple(line.strip() for line in f.read_text(encoding="utf-8-sig").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: cannot read class names ({e})") from None
        if len(names) > MAX_CLASSES:
            raise DataError(f"{f}: {len(names):,} class names; fmnist takes at most {MAX_CLASSES:,} classes")
        return check_class_names(names, str(f))
    return None


def content_fingerprint(images: np.ndarray) -> str:
    """A hash of a split's images that ignores their order: the same pictures read from IDX files, a CSV or class
    folders (whose labels are numbered by folder name) give the same fingerprint."""
    import hashlib

    flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
    rows = sorted(hashlib.blake2b(r.tobytes(), digest_size=8).digest() for r in flat)
    return hashlib.sha1(b"".join(rows)).hexdigest()[:16]


def is_fashion_mnist(*splits: RawSplit | None) -> bool:
    """Whether every split given is a whole official Fashion-MNIST split, in any order and any format (its
    content fingerprint)."""
    given = [s for s in splits if s is not None]
    return bool(given) and all(len(s) in (10_000, 60_000) and
                               content_fingerprint(s.images) in FASHION_FINGERPRINTS for s in given)


def resolve_class_names(train: RawSplit, test: RawSplit | None,
                        given: tuple[str, ...] | None) -> tuple[tuple[str, ...], str | None]:
    """The class names of a dataset and a note when they were not given: a classes.txt's names; Fashion-MNIST's
    own for the official files; else the numbers 0..K-1, K one more than the largest label. Numbers that leave a
    class without a training row are refused (a label column read by mistake, or classes numbered from 1)."""
    if given:
        return given, None
    if is_fashion_mnist(train, test):
        return FASHION_CLASSES, None
    labels = [s.labels[s.labels >= 0] for s in (train, test) if s is not None]
    top = max((int(v.max()) for v in labels if len(v)), default=-1)
    if top < 1:
        raise DataError(f"{train.source}: every usable label is {max(top, 0)}; a classifier needs at least 2 classes")
    present = np.bincount(np.concatenate(labels), minlength=top + 1) > 0
    absent = np.flatnonzero(~present)
    shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
    if not present[0] or len(absent) > (top + 1) // 2:  # numbered from 1, or a column that holds no labels
        raise DataError(f"{train.source}: labels run 0..{top} but {len(absent)} of those classes ({shown}) have no "
                        "rows; number the classes 0..K-1, or name every class in a classes.txt beside the data")
    return tuple(str(i) for i in range(top + 1)), (
        f"{train.source}: no classes.txt beside the data, so the {top + 1} classes are named by their numbers "
        f"0..{top} (a classes.txt names them, one per line)"
        + (f"; class(es) {shown} have no rows" if len(absent) else ""))


def check_same_classes(train_source: str | os.PathLike, test_source: str | os.PathLike,
                       class_names: tuple[str, ...] | None) -> None:
    """Refuse a test split whose own classes.txt names the classes otherwise (another order, other names): its
    labels would mean other classes than the training labels."""
    f = _classes_file(test_source)
    if f.is_file() and f.resolve() != _classes_file(train_source).resolve():
        theirs = read_class_names(test_source)
        if class_names is None:
            raise DataError(f"{f}: the test data names its classes and the training data does not; give both the "
                            "same classes.txt")
        if theirs != tuple(class_names):
            i = next((k for k, (a, b) in enumerate(zip(theirs, class_names, strict=True)) if a != b), 0)
            raise DataError(f"{f}: the test data names its classes otherwise than the training data (class {i}: "
                            f"'{theirs[i]}' here, '{class_names[i]}' for training); the labels would mean other "
                            "classes: give both the same classes.txt")
