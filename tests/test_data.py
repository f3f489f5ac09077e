import gzip
import json
import struct

import numpy as np
import pytest
from conftest import glyphs, write_csv

from fmnist.cli import main
from fmnist.data import holdout_split, kfold_splits, load_dataset
from fmnist.data.readers import read_csv, read_idx
from fmnist.errors import DataError


def test_real_idx_data_loads_and_is_clean():
    ds = load_dataset()
    assert ds.train.images.shape == (60000, 28, 28) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (10000, 28, 28)
    r = ds.report()
    assert r["train"]["rows_kept"] == 60000 and r["train"]["duplicates_removed"] == 0
    assert r["train_test_overlap"] == 0
    assert all(v == 6000 for v in r["train"]["class_counts"].values())


def _dirty_csv(tmp_path, rng):
    base = rng.integers(0, 256, size=(12, 784))
    labels = [i % 10 for i in range(12)]
    rows = [list(r) for r in base]
    # row 12 duplicates row 0 exactly; row 13 duplicates row 1 with another label (conflict, both dropped)
    rows.append(list(base[0])); labels.append(labels[0])
    rows.append(list(base[1])); labels.append((labels[1] + 1) % 10)
    r = list(rng.integers(0, 256, 784)); r[5] = ""; rows.append(r); labels.append(3)      # empty cell
    r = list(rng.integers(0, 256, 784)); r[7] = "abc"; rows.append(r); labels.append(4)   # text in a pixel
    rows.append(list(rng.integers(0, 256, 784))); labels.append(10)                     # label 10
    r = list(rng.integers(0, 256, 784)); r[0] = 300; rows.append(r); labels.append(2)     # pixel 300
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(10)))  # 10 classes: 10 is invalid
    return write_csv(tmp_path / "train.csv", labels, rows)


def test_audit_counts_known_problems(tmp_path, rng):
    train = _dirty_csv(tmp_path, rng)
    test_rows = [list(np.asarray(read_csv(train).images[2]).reshape(-1))]  # train row 2 also in test: leakage
    test = write_csv(tmp_path / "test.csv", [2], test_rows)
    ds = load_dataset(train, test)
    tr = ds.report()["train"]
    assert tr["rows_read"] == 18
    assert tr["rows_with_missing_values"] == 1
    assert tr["rows_with_invalid_values"] == 3
    assert tr["duplicates_removed"] == 1
    assert tr["conflicting_duplicates_removed"] == 2
    assert ds.train_test_overlap == 1
    assert tr["rows_kept"] == 18 - 1 - 3 - 1 - 2 - 1 == len(ds.train)
    assert any("pixel8" in e for e in tr["examples"]["non_numeric"])


def test_no_clean_refuses_unusable_rows(tmp_path, rng):
    train = _dirty_csv(tmp_path, rng)
    with pytest.raises(DataError, match=r"train.csv: line \d+: pixel6 is empty"):
        load_dataset(train, clean=False)


def test_data_command_writes_report_and_pictures(tmp_path, rng):
    train = _dirty_csv(tmp_path, rng)
    out = tmp_path / "out"
    assert main(["data", "--data", str(train), "--out", str(out)]) == 0
    r = json.loads((out / "data_report.json").read_text())
    assert r["train"]["duplicates_removed"] == 1 and "test" not in r
    for png in ("class_distribution.png", "samples.png", "mean_images.png", "pixel_histogram.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def _idx(path, magic, dims, payload, gz=True):
    data = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("case, pattern", [
    ("magic", "bad IDX magic number 0x00000999"),
    ("truncated", "truncated"),
    ("counts", "3 images but .* has 2 labels"),
    ("empty", "empty file"),
])
def test_malformed_idx_one_line_exit_2(tmp_path, capsys, case, pattern):
    im, lb = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    _idx(im, 0x803, (3, 28, 28), bytes(3 * 784))
    _idx(lb, 0x801, (3,), bytes(3))
    if case == "magic":
        _idx(im, 0x999, (3, 28, 28), bytes(3 * 784))
    elif case == "truncated":
        _idx(im, 0x803, (3, 28, 28), bytes(2 * 784))
    elif case == "counts":
        _idx(lb, 0x801, (2,), bytes(2))
    elif case == "empty":
        im.write_bytes(b"")
    assert main(["data", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    import re
    assert re.search(pattern, err), err


@pytest.mark.parametrize("content, pattern", [
    ("pixel1,pixel2\n1,2\n", "no 'label' column"),
    ("label," + ",".join(f"pixel{i}" for i in range(1, 784)) + "\n" + ",".join(["1"] * 784) + "\n",
     "783 pixel columns, expected 784"),
    ("", "empty file"),
])
def test_malformed_csv_one_line_exit_2(tmp_path, capsys, content, pattern):
    f = tmp_path / "train.csv"
    f.write_text(content)
    assert main(["data", "--data", str(f)]) == 2
    err = capsys.readouterr().err
    assert pattern in err and "train.csv" in err and len(err.strip().splitlines()) == 1


def test_directory_without_data(tmp_path, capsys):
    assert main(["data", "--data", str(tmp_path)]) == 2
    assert "no data here" in capsys.readouterr().err


def test_a_damaged_npz_is_one_line(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(50, np.uint8))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # the zip directory at the end is lost
    with pytest.raises(DataError, match=r"cut.npz: not a readable .npz file \(File is not a zip file\)"):
        load_dataset(tmp_path / "cut.npz")
    hit = bytearray(data)
    hit[1000:1100] = bytes(100)  # inside x_train's stored bytes: the directory is intact, the checksum is not
    (tmp_path / "hit.npz").write_bytes(bytes(hit))
    with pytest.raises(DataError, match="hit.npz: corrupt array x_train or y_train"):
        load_dataset(tmp_path / "hit.npz")


def test_uncompressed_idx_and_npz_agree(tmp_path):
    x = np.arange(2 * 784, dtype=np.uint8).reshape(2, 28, 28)
    _idx(tmp_path / "train-images-idx3-ubyte", 0x803, (2, 28, 28), x.tobytes(), gz=False)
    assert (read_idx(tmp_path / "train-images-idx3-ubyte", 3) == x).all()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1]), x_test=255 - x[:1], y_test=np.array([1]))
    ds = load_dataset(tmp_path / "d.npz")
    assert (ds.train.images == x).all() and list(ds.test.labels) == [1] and ds.class_names == ("0", "1")


def test_csv_round_trip_matches_idx(tmp_path, small_ds):
    f = write_csv(tmp_path / "train.csv", small_ds.train.labels[:50], small_ds.train.images[:50].reshape(50, -1))
    raw = read_csv(f)
    assert (raw.images == small_ds.train.images[:50]).all() and (raw.labels == small_ds.train.labels[:50]).all()


def test_splits_are_stratified_and_disjoint(small_ds):
    y = small_ds.train.labels
    tr, va = holdout_split(y, 0.2, seed=0)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(y)
    assert np.abs(np.bincount(y[va], minlength=10) - 0.2 * np.bincount(y, minlength=10)).max() <= 1
    folds = kfold_splits(y, 3, seed=0)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals) == list(range(len(y)))
    for tr, va in folds:
        assert len(set(tr) & set(va)) == 0


def _rows(ds, n):
    return ds.train.images[:n].reshape(n, -1), ds.train.labels[:n]


def test_class_name_labels_are_read_and_said(tmp_path, small_ds, capsys):
    from fmnist.data import FASHION_CLASSES

    px, y = _rows(small_ds, 30)
    (tmp_path / "classes.txt").write_text("\n".join(FASHION_CLASSES))  # the names the labels are given by
    f = write_csv(tmp_path / "train.csv", [f" {FASHION_CLASSES[i].upper()} " for i in y], px)
    ds = load_dataset(f)
    assert (ds.train.labels == y).all() and "30 labels given as class names" in ds.changes()[0]
    labels = [FASHION_CLASSES[i] for i in y]
    labels[4] = "Tshirt"  # neither a number nor a class name: that row is dropped, and the message says why
    write_csv(f, labels, px)
    assert main(["data", "--data", str(f)]) == 0
    err = capsys.readouterr().err
    assert "kept 29 of 30 rows" in err and "line 6: label is not a number ('Tshirt')" in err
    write_csv(f, ["Tshirt"] * 30, px)
    with pytest.raises(DataError, match=r"train.csv: no usable train rows: cleaning dropped all 30 \(30 with invalid "
                                        r"values\); e.g. line 2: label is not a number \('Tshirt'\): neither 0..9 "
                                        r"nor a class name"):
        load_dataset(f)


def test_npz_floats_in_0_1_are_scaled_and_other_scales_refused(tmp_path, small_ds):
    x, y = small_ds.train.images[:40], small_ds.train.labels[:40]
    np.savez(tmp_path / "f.npz", x_train=x / 255.0, y_train=y)
    ds = load_dataset(tmp_path / "f.npz")
    assert (ds.train.images == x).all() and ds.changes()[0] == f"{tmp_path / 'f.npz'}[train]: float pixels in 0..1, " \
                                                               "scaled to 0..255"
    assert "the 10 classes are named by their numbers 0..9" in ds.changes()[1]  # 40 rows: not the official files
    np.savez(tmp_path / "s.npz", x_train=(x / 255.0 - 0.286) / 0.353, y_train=y)
    with pytest.raises(DataError, match=r"s.npz\[train\]: pixels range -0.81..2.02; negative values look "
                                        "standardized"):
        load_dataset(tmp_path / "s.npz")
    np.savez(tmp_path / "b.npz", x_train=x > 0, y_train=y)
    with pytest.raises(DataError, match="booleans are not pixel values"):
        load_dataset(tmp_path / "b.npz")
    np.savez(tmp_path / "o.npz", x_train=np.array([None, 1], dtype=object), y_train=np.array([1, 2]))
    with pytest.raises(DataError, match="o.npz: x_train: holds Python objects"):
        load_dataset(tmp_path / "o.npz")


def test_class_names_must_be_distinct(tmp_path, small_ds):
    px, y = _rows(small_ds, 20)
    write_csv(tmp_path / "train.csv", y, px)
    (tmp_path / "classes.txt").write_text("\n".join(["a", "b", "c", "d", "e", "f", "g", "h", "a", "j"]) + "\n")
    with pytest.raises(DataError, match=r"classes.txt: class name 'a' appears twice \(names 1 and 9\)"):
        load_dataset(tmp_path / "train.csv")


def test_messages_show_values_not_reprs(tmp_path, small_ds):
    px, y = _rows(small_ds, 12)
    px = px.astype(object)
    px[3, 0] = 12.5
    ds = load_dataset(write_csv(tmp_path / "train.csv", y, px))
    line = ds.changes()[0]
    assert "line 5: pixel1 is not an integer (12.5)" in line and "np." not in line


@pytest.mark.parametrize("argv, needle", [
    (["--limit", "0"], "--limit must be a whole number of rows, at least 1; got 0"),
    (["--test-limit", "0"], "--test-limit must be a whole number of rows, at least 1; got 0"),
    (["--limit", "5"], "5 training rows are too few for a stratified 20% validation split"),
    (["--limit", "50", "--lr", "nan"], "lr must be a finite number, got nan"),
    (["--limit", "50", "--momentum", "1.5"], "momentum must be below 1"),
    (["--limit", "50", "--weight-decay", "-1"], "weight_decay must not be negative"),
])
def test_bad_settings_are_refused_before_any_file_is_written(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--epochs", "1", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not out.exists()


def test_train_prints_every_row_cleaning_dropped(tmp_path, small_ds, capsys):
    px, y = _rows(small_ds, 120)
    y = y.copy()
    y[:3] = 12
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(10)))  # 10 classes: 12 is invalid
    f = write_csv(tmp_path / "train.csv", y, px)
    assert main(["train", "lenet5", "--data", str(f), "--epochs", "1", "--val-fraction", "0", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "kept 117 of 120 rows; dropped 3 with invalid values (e.g. line 2: label is outside 0..9 (12))" in err


def test_csv_variants_people_have(tmp_path, small_ds):
    import gzip as gz

    px, y = _rows(small_ds, 25)
    body = "\n".join(",".join(map(str, [lab, *row])) for lab, row in zip(y, px, strict=True)) + "\n"
    header = ",".join(["label"] + [f"pixel{i}" for i in range(1, 785)]) + "\n"
    (tmp_path / "nohdr.csv").write_text(body)  # no header line
    (tmp_path / "bom.csv").write_text(header + body, encoding="utf-8-sig")  # saved by Excel
    with gz.open(tmp_path / "z_train.csv.gz", "wt") as f:  # compressed
        f.write(header + body)
    for name in ("nohdr.csv", "bom.csv", "z_train.csv.gz"):
        ds = load_dataset(tmp_path / name)
        assert (ds.train.labels == y).all() and (ds.train.images == small_ds.train.images[:25]).all(), name
    (tmp_path / "semi.csv").write_text(header.replace(",", ";") + body.replace(",", ";"))
    with pytest.raises(DataError, match="semi.csv: no 'label' column .* looks separated by ';'"):
        load_dataset(tmp_path / "semi.csv")


def test_npz_one_hot_labels_and_colour_images(tmp_path, small_ds):
    x, y = small_ds.train.images[:30], small_ds.train.labels[:30]
    np.savez(tmp_path / "h.npz", x_train=x, y_train=np.eye(10)[y])
    ds = load_dataset(tmp_path / "h.npz")
    assert (ds.train.labels == y).all() and "one-hot labels read as class numbers" in ds.changes()[0]
    np.savez(tmp_path / "c.npz", x_train=np.repeat(x[..., None], 3, axis=-1), y_train=y)
    with pytest.raises(DataError, match=r"shape \(30, 28, 28, 3\), expected \(N, 28, 28\) \(colour images"):
        load_dataset(tmp_path / "c.npz")


def test_twelve_classes_in_an_npz_are_twelve_numbered_classes(tmp_path):
    x, y = glyphs(12, 30)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.class_names == tuple(str(i) for i in range(12)) and len(ds.train) == 360 and not ds.fashion
    assert "the 12 classes are named by their numbers 0..11" in ds.changes()[-1]
    (tmp_path / "classes.txt").write_text("\n".join(f"angle {15 * c}" for c in range(12)))
    assert load_dataset(tmp_path / "d.npz").class_names[11] == "angle 165"
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\n")  # 5 names, labels up to 11: rows dropped and said
    ds = load_dataset(tmp_path / "d.npz")
    assert len(ds.train) == 150 and "label 5 is outside 0..4" in " ".join(ds.changes())


def test_official_fashion_is_named_and_a_slice_of_it_is_numbered(small_ds, tmp_path):
    assert small_ds.fashion and small_ds.class_names[0] == "T-shirt/top"  # the official files, by fingerprint
    np.savez(tmp_path / "s.npz", x_train=small_ds.train.images[:100], y_train=small_ds.train.labels[:100])
    assert load_dataset(tmp_path / "s.npz").class_names == tuple("0123456789")


def test_numbers_from_one_or_a_stray_column_are_refused(tmp_path):
    x, y = glyphs(3, 10)
    np.savez(tmp_path / "one.npz", x_train=x, y_train=y + 1)
    with pytest.raises(DataError, match=r"labels run 0..3 but 1 of those classes \(0\) have no rows; number the "):
        load_dataset(tmp_path / "one.npz")
    np.savez(tmp_path / "stray.npz", x_train=x[:3], y_train=[0, 1, 1000])
    with pytest.raises(DataError, match="item 2: label 1000 is outside 0..999; this row cannot be used"):
        load_dataset(tmp_path / "stray.npz", clean=False)


def test_from_arrays_takes_what_a_notebook_holds_with_the_files_messages():
    from fmnist.data import Dataset

    x, y = glyphs(4, 20)
    xt, yt = glyphs(4, 2, seed=1)
    for shaped in (x, x.reshape(len(x), 784), x[..., None], x / 255.0):
        ds = Dataset.from_arrays(shaped, y, xt, yt, class_names=["a", "b", "c", "d"])
        assert (ds.train.images == x).all() and ds.class_names == ("a", "b", "c", "d") and len(ds.test) == 8
    assert "float pixels in 0..1, scaled to 0..255" in Dataset.from_arrays(x / 255.0, y).changes()[0]
    with pytest.raises(DataError, match=r"x_train: images have shape \(80, 27, 28\), expected \(N, 28, 28\)"):
        Dataset.from_arrays(x[:, 1:], y)
    with pytest.raises(DataError, match="x_train: 80 images but 79 labels"):
        Dataset.from_arrays(x, y[1:])
    with pytest.raises(DataError, match="class_names: class name 'a' appears twice"):
        Dataset.from_arrays(x, y, class_names=["a", "b", "a", "d"])
    assert Dataset.from_arrays(x, y, class_names=["a", "A", "b", "B"]).class_names[1] == "A"  # EMNIST's kind
    with pytest.raises(DataError, match="give both x_test and y_test"):
        Dataset.from_arrays(x, y, x[:4])


def test_a_folder_of_class_folders_is_read_prepared_cached_and_its_bad_files_named(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setenv("FMNIST_CACHE", str(tmp_path / "cache"))
    x, y = glyphs(3, 14)
    root = tmp_path / "pictures"
    for i, (im, c) in enumerate(zip(x, y, strict=True)):
        (root / f"class {c}").mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(255 - im).resize((112, 112)).convert("RGB")  # dark on light, colour, 4x the size
        big.save(root / f"class {c}" / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "class 1" / "broken.png").write_bytes(b"not a picture")
    assert main(["data", "--data", str(root), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable file(s) of 43: class 1/broken.png: not a readable image" in err
    assert "no train/ and test/ folders, so a stratified 14% of the pictures (6, seed 0) is the test split" in err
    ds = load_dataset(root)
    assert ds.class_names == ("class 0", "class 1", "class 2") and len(ds.train) + len(ds.test) == 42
    assert ds.train.images.shape[1:] == (28, 28) and ds.train.images[:, 0, 0].max() < 60  # light on black
    assert "read from the cache" in " ".join(ds.changes())  # the second read
    (root / "train").mkdir()
    for c in range(3):  # train/ and test/ folders: their own split
        (root / f"class {c}").rename(root / "train" / f"class {c}")
    (root / "test" / "class 2").mkdir(parents=True)
    Image.fromarray(x[-1]).save(root / "test" / "class 2" / "t.png")
    ds = load_dataset(root)
    assert len(ds.test) == 1 and ds.test.labels[0] == 2 and len(ds.train) == 42
    (root / "test" / "other").mkdir()
    Image.fromarray(x[0]).save(root / "test" / "other" / "o.png")
    with pytest.raises(DataError, match="test: class folder.s. other have no folder in"):
        load_dataset(root)
