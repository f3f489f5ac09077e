"""Prediction on new inputs: images of any size and colour, .npy arrays and CSV rows."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.choices import PREPROCESS
from fmnist.data.readers import check_npy_header, pixel_scale
from fmnist.errors import DataError

MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs




def image_to_array(data: bytes | str | os.PathLike, invert: str = "auto", name: str = "image",
                   preprocess: str = "dataset") -> np.ndarray:
    """Any picture file (PNG, JPEG, ...) -> the (28, 28) uint8 a Fashion-MNIST model expects (see `prepare`).

    EXIF orientation is applied and transparency composited onto white before anything else.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    # the size is checked from the header below, before decoding: Pillow's own (process-wide) limit stays as it is
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else Path(data)
        with Image.open(src) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{name}: image of {im.width}x{im.height} pixels is over the limit")
            if im.format == "JPEG" and max(im.size) > 1024:
                im.draft("L", (im.width // 4, im.height // 4))  # decode a phone photo at a quarter: 16x less work
            im.load()
            fmt = im.format
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im.convert("RGBA"))
            g = _deep_to_8bit(im, fmt, name) if im.mode.startswith(("I", "F")) else im.convert("L")
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{name}: image is over the pixel limit ({MAX_IMAGE_PIXELS:,})") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not a readable image (not a format Pillow knows: PNG, JPEG, GIF, BMP, WebP, "
                        "TIFF, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow's messages can hold reprs such as <_io.BytesIO object at 0x7f...>: keep only the words
        why = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e).splitlines()[0] if str(e) else "") or "corrupt"
        raise DataError(f"{name}: not a readable image ({why})") from None
    return prepare(np.asarray(g, dtype=np.uint8), preprocess=preprocess, invert=invert)


def _deep_to_8bit(im: object, fmt: str | None, name: str) -> object:
    """A 16-bit, 32-bit integer or float grayscale picture as 8-bit, scaled by its bit depth: Pillow's own
    conversion to "L" clips such values to 0..255 instead of scaling them."""
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    hi = float(a.max()) if a.size else 0.0
    if im.mode.startswith("I;16") or (im.mode == "I" and fmt == "PNG"):  # PNG's 16-bit grayscale
        a = a / 257.0
    elif im.mode == "F" and hi <= 1.0:  # 0..1 intensities
        a = a * 255.0
    elif hi > 255:
        if hi > 65535 or im.mode == "F":
            raise DataError(f"{name}: {im.mode} picture with values up to {hi:.6g}; expected 8- or 16-bit levels")
        a = a / 257.0
    if (a < 0).any():
        raise DataError(f"{name}: {im.mode} picture with negative values; expected 0..255 or 0..65535 levels")
    return Image.fromarray(np.rint(a).astype(np.uint8))


def prepare(gray: np.ndarray, preprocess: str = "dataset", invert: str = "auto") -> np.ndarray:
    """A grayscale picture (H, W) uint8 -> (28, 28) uint8, a light article on black like Fashion-MNIST.

    invert: 'auto' negates dark-on-light pictures (bright border), 'yes' always, 'no' never.
    preprocess: 'dataset' makes the picture the way Fashion-MNIST's images were made from shop photos (its README:
    trim the background around the article, resize the longest edge to 28, sharpen, centre on a 28x28 canvas,
    negate), with a tolerance for noisy and JPEG backgrounds and soft shadows; 'fit' fits the whole picture into
    28x28; 'none' only resizes it to 28x28. A 28x28 picture is taken as a dataset image: only negated if needed.
    """
    from PIL import Image

    if preprocess not in PREPROCESS:
        raise DataError(f"preprocess '{preprocess}' unknown; choose from {', '.join(PREPROCESS)}")
    if invert not in ("auto", "yes", "no"):
        raise DataError(f"invert '{invert}' unknown; choose from auto, yes, no")
    a = np.asarray(gray, dtype=np.uint8)
    if invert == "yes" or (invert == "auto" and _border_mean(a) > 127):
        a = 255 - a
    if a.shape == (28, 28):
        return a.copy()
    if preprocess == "none":
        return np.asarray(Image.fromarray(a).resize((28, 28), Image.Resampling.LANCZOS), dtype=np.uint8)
    if preprocess == "dataset":
        cropped = _trim(a)  # None: nothing stands out from the background, a blank picture
        return _centre(cropped, sharpen=True) if cropped is not None else np.zeros((28, 28), np.uint8)
    return _centre(a, sharpen=False)


def _border_mean(a: np.ndarray) -> float:
    return float(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean())


def _trim(a: np.ndarray) -> np.ndarray | None:
    """The article cut out of its background, background level at 0; None when nothing stands out."""
    from PIL import Image, ImageFilter

    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).astype(np.float64)
    bg = float(np.median(border))
    spread = float(np.median(np.abs(border - bg)))
    # a median filter removes JPEG ringing and sensor noise before deciding what is not background; the
    # tolerance keeps soft shadows and uneven light out of the box (Pillow has the filter; the rest is NumPy)
    k = 5 if min(a.shape) >= 50 else 3
    smooth = np.asarray(Image.fromarray(a).filter(ImageFilter.MedianFilter(k)), dtype=np.float64)
    mask = smooth - bg > max(24.0, 6.0 * spread)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    crop = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float64)
    return np.clip((crop - bg) * 255.0 / max(1.0, 255.0 - bg), 0, 255).astype(np.uint8)


def _centre(a: np.ndarray, sharpen: bool) -> np.ndarray:
    """Longest edge resized to 28 (Lanczos), optionally sharpened, centred on a black 28x28 canvas."""
    from PIL import Image, ImageFilter

    h, w = a.shape
    scale = 28 / max(h, w)
    im = Image.fromarray(a).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    if sharpen:
        im = im.filter(ImageFilter.SHARPEN)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(im, ((28 - im.width) // 2, (28 - im.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def pixels_to_array(values: object, name: str = "pixels") -> tuple[np.ndarray, str | None]:
    """784 values or a 28x28 array -> ((N, 28, 28) uint8, note); one image or a batch.

    Pixels are 0..255 numbers, or 0..1 floats (scaled, and the note says so); see `pixel_scale` for what is refused.
    """
    try:
        a = np.asarray(values)
    except (ValueError, TypeError, RecursionError):  # ragged nesting, e.g. rows of different lengths
        raise DataError(f"{name}: not an array of numbers (rows of different lengths?)") from None
    if a.size == 0:
        raise DataError(f"{name}: holds no pixels (an empty array)")
    a, note = pixel_scale(a, name)
    if a.shape == (784,) or a.shape == (28, 28):
        a = a.reshape(1, 28, 28)
    elif a.ndim == 2 and a.shape[1] == 784:
        a = a.reshape(-1, 28, 28)
    elif a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise DataError(f"{name}: shape {a.shape}; expected 784 values, 28x28, (N, 784) or (N, 28, 28)")
    if not np.array_equal(a, np.rint(a)):
        note = (note + "; " if note else f"{name}: ") + "non-integer pixel values rounded"
    return np.rint(a).astype(np.uint8), note


def load_inputs(path: str | os.PathLike, invert: str = "auto", notes: list[str] | None = None,
                preprocess: str = "dataset") -> tuple[np.ndarray, list[str]]:
    """Images (N, 28, 28) uint8 and a name per image from an image, .npy or .csv file.

    What was changed to read them (0..1 floats scaled, values rounded) is appended to `notes`.
    """
    notes = notes if notes is not None else []
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a directory; give image, .npy or .csv files")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            with open(p, "rb") as f:
                if f.read(6) == b"\x93NUMPY":  # an .npy (np.load also reads an .npz of any name: refused below)
                    f.seek(0)
                    check_npy_header(f, p.stat().st_size, str(p))
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # EOFError: an empty file
            raise DataError(f"{p}: not a readable .npy file ({e})") from None
        if not isinstance(arr, np.ndarray):  # np.load reads an .npz archive too, whatever the file's name
            arr.close()
            raise DataError(f"{p}: an .npz archive, not an .npy array; give one array of images")
        x, note = pixels_to_array(arr, str(p))
        notes += [note] if note else []
        return x, [str(p)] if len(x) == 1 else [f"{p}[{i}]" for i in range(len(x))]
    if suffix == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(p, header=None)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise DataError(f"{p}: not a readable CSV ({str(e).strip() or 'empty'})") from None
        except UnicodeDecodeError:
            raise DataError(f"{p}: not a text CSV file") from None
        if len(df) and pd.isna(pd.to_numeric(df.iat[0, 0], errors="coerce")):
            df = df.iloc[1:]  # a header row (label,pixel1,...)
        df = df.apply(pd.to_numeric, errors="coerce")
        if df.shape[1] == 785:
            df = df.iloc[:, 1:]  # label,pixel1..pixel784: the label is ignored
        if df.shape[1] != 784:
            raise DataError(f"{p}: rows have {df.shape[1]} values; expected 784 pixels (or label + 784)")
        if df.isna().any().any():
            r = int(np.flatnonzero(df.isna().any(axis=1).to_numpy())[0])
            raise DataError(f"{p}: row {r + 1} has an empty or non-numeric cell")
        values = df.to_numpy()
        x, note = pixels_to_array(values if values.dtype.kind in "iu" else values.astype(np.float64), str(p))
        notes += [note] if note else []
        return x, [f"{p}:{i + 1}" for i in range(len(x))]
    if suffix == ".npz":
        raise DataError(f"{p}: predict reads images, .npy or .csv files; to score a dataset (.npz) use "
                        "`fmnist evaluate RUN_DIR --data FILE`")
    return image_to_array(p, invert, str(p), preprocess)[None], [str(p)]


def describe_set(classes: list[str] | None, level: float) -> str:
    """A prediction set in words: "90% set: Shirt or T-shirt/top", or why it is empty."""
    if classes is None:
        return "no prediction set (the model has no calibration)"
    if not classes:
        return f"{level:.0%} set: none (no class is likely enough at {level:.0%})"
    return f"{level:.0%} set: {' or '.join(classes)}"


@dataclass
class Prediction:
    """Top classes of one input."""

    name: str
    label: str
    index: int
    probabilities: dict[str, float]
    warning: str | None = None  # set when the picture looks unlike the training data (see Predictor.warnings)
    # the classes that hold the true one with probability `Predictor.calibration.level` (conformal prediction);
    # None for a model saved without calibration
    set: list[str] | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable classes."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]


class Predictor:
    """A saved model loaded once, predicting uint8 images (N, 28, 28) like those of the dataset.

    `Predictor.from_run(dir).predict(images)` gives class names; `predict_proba` the (N, C) probabilities.
    """

    def __init__(self, run_dir: str | os.PathLike, backend: str = "torch", device: str = "cpu") -> None:
        from fmnist.inference import load_checkpoint

        if backend not in ("torch", "onnx"):
            raise DataError(f"backend '{backend}' unknown; choose torch or onnx")
        self.run_dir = Path(run_dir)
        self.model, self.meta = load_checkpoint(self.run_dir, device=device)
        self.class_names: list[str] = list(self.meta["class_names"])
        from fmnist.trust import Calibration

        # temperature and prediction-set threshold fitted on held-out images when the model was trained
        self.calibration = Calibration.from_dict(self.meta.get("calibration"))
        self.backend = backend
        self.onnx = None
        if backend == "onnx":
            from fmnist.export import OnnxModel

            self.onnx = OnnxModel(self.run_dir)
            if self.onnx.classes not in (None, len(self.class_names)):
                raise DataError(f"{self.onnx.path}: answers {self.onnx.classes} classes, the checkpoint names "
                                f"{len(self.class_names)}: export the run again")

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, backend: str = "torch", device: str = "cpu") -> Predictor:
        """The model of a run directory (`fmnist train ... --out DIR`)."""
        return cls(run_dir, backend=backend, device=device)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, C) logits of uint8 images (N, 28, 28) (0..1 floats are scaled, see pixels_to_array)."""
        from fmnist.config import tta_views_of
        from fmnist.inference import numpy_logits, tta_arrays

        images = self._as_images(images)
        tta = tta_views_of(self.meta.get("config", {}))
        if self.onnx is not None:  # the same test-time augmentation as the PyTorch path
            views = tta_arrays(images, tta)
            return sum(self.onnx.logits(v) for v in views) / len(views)
        return numpy_logits(self.model, images, tta=tta)

    def predict_proba(self, images: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """(N, C) class probabilities, calibrated with the run's temperature when it has one."""
        from fmnist.metrics import softmax

        logits = self.logits(images) if logits is None else logits
        return self.calibration.probabilities(logits) if self.calibration else softmax(logits)

    def predict_set(self, images: np.ndarray, probs: np.ndarray | None = None) -> list[list[str]] | None:
        """Per image, the classes that hold the true one with probability calibration.level (split conformal
        prediction); None when the model was saved without calibration."""
        if self.calibration is None:
            return None
        probs = self.predict_proba(images) if probs is None else probs
        return [[self.class_names[j] for j in np.flatnonzero(row)] for row in self.calibration.sets(probs)]

    def warnings(self, images: np.ndarray, logits: np.ndarray | None = None) -> list[str | None]:
        """Per image, a sentence when it looks unlike the training data, else None: a blank picture, or an energy
        score above the threshold calibrated when the model was trained (runs saved before that: blank only)."""
        from fmnist.inference import energy

        images = self._as_images(images)
        logits = self.logits(images) if logits is None else logits
        ood = self.meta.get("ood") or {}
        out: list[str | None] = []
        for img, e in zip(images, energy(logits), strict=True):
            if img.max() == 0:
                out.append("nothing stands out from the background: there is nothing to classify")
            elif "energy_threshold" in ood and e > ood["energy_threshold"]:
                out.append(f"this picture looks unlike the training images (energy {e:.2f}, above the "
                           f"{ood['energy_threshold']:.2f} that {100 * ood['quantile']:.0f}% of held-out images stay "
                           "under): the label may mean little")
            else:
                out.append(None)
        return out

    def predict(self, images: np.ndarray) -> list[str]:
        """The most probable class name of each image."""
        return [self.class_names[i] for i in self.predict_proba(images).argmax(axis=1)]

    def predictions(self, images: np.ndarray, names: list[str]) -> list[Prediction]:
        """A Prediction (name, label, probabilities) per image."""
        logits = self.logits(images)
        probs = self.predict_proba(images, logits)
        sets = self.predict_set(images, probs) or [None] * len(probs)
        out = []
        for name, p, warn, s in zip(names, probs, self.warnings(images, logits), sets, strict=True):
            i = int(p.argmax())
            out.append(Prediction(name, self.class_names[i], i,
                                  {c: float(v) for c, v in zip(self.class_names, p, strict=True)}, warn, s))
        return out

    @staticmethod
    def _as_images(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28):
            return images
        return pixels_to_array(images, "images")[0]
