"""Accuracy on product-style photos made from the official test images, against the images themselves.

Each test image becomes a "shop photo": the article dark on a white or light-grey background, scaled 3-12x,
placed anywhere on a larger canvas of another shape, with sensor noise, and saved as JPEG at quality 40-95 -- the
reverse of how Fashion-MNIST's README says its images were made. The photos are classified through
`fmnist.predict.image_to_array` with each --preprocess mode.

    python benchmarks/photos.py RUN_DIR [--n 2000] [--seed 0] [--save DIR]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
from PIL import Image


def make_photo(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """A (28, 28) Fashion-MNIST image as a JPEG product photo."""
    scale = rng.uniform(3, 12)
    side = int(round(28 * scale))
    ink = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    shade = rng.uniform(200, 255)  # white to light grey
    h = int(side * rng.uniform(1.05, 2.0))
    w = int(side * rng.uniform(1.05, 2.0))
    canvas = np.full((h, w), shade)
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    region = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = region * (1 - ink)  # dark article: light pixels of the original
    canvas += rng.normal(0, 3, canvas.shape)
    buf = io.BytesIO()
    quality = int(rng.integers(40, 96))
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=2000, help="test images to turn into photos (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", metavar="DIR", help="also write the first 16 photos and what the model saw")
    a = ap.parse_args()
    import fmnist
    from fmnist.predict import image_to_array

    ds = fmnist.load_dataset()
    rng = np.random.default_rng(a.seed)
    idx = rng.choice(len(ds.test), size=min(a.n, len(ds.test)), replace=False)
    pred = fmnist.Predictor.from_run(a.run_dir)
    images, labels = ds.test.images[idx], ds.test.labels[idx]
    photos = [make_photo(x, rng) for x in images]
    base = (np.array(pred.predict(images)) == np.array([ds.class_names[y] for y in labels])).mean()
    print(f"{len(idx)} test images at 28x28: accuracy {base:.2%}")
    for mode in ("dataset", "fit"):
        t = time.perf_counter()
        seen = np.stack([image_to_array(p, preprocess=mode) for p in photos])
        acc = (np.array(pred.predict(seen)) == np.array([ds.class_names[y] for y in labels])).mean()
        ms = 1000 * (time.perf_counter() - t) / len(idx)
        print(f"  as photos, --preprocess {mode}: accuracy {acc:.2%} ({ms:.1f} ms a photo)")
        if a.save and mode == "dataset":
            from pathlib import Path

            out = Path(a.save)
            out.mkdir(parents=True, exist_ok=True)
            for i in range(16):
                (out / f"photo{i}.jpg").write_bytes(photos[i])
                Image.fromarray(seen[i]).resize((112, 112), Image.Resampling.NEAREST).save(out / f"seen{i}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
