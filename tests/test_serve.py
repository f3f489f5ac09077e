import io
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fmnist.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    assert main(["train", "lenet5", "--limit", "400", "--test-limit", "100", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def client(run_dir):
    from fmnist.serve import create_app

    with TestClient(create_app(run_dir, max_body_bytes=200_000)) as c:
        yield c


def _png(arr, size=None, mode="L"):
    im = Image.fromarray(arr).convert(mode)
    if size:
        im = im.resize(size)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_predict_image_json_batch_and_info(client, small_ds):
    img = small_ds.test.images[0]
    r = client.post("/predict", files={"file": ("shoe.png", _png(img, (100, 100), "RGB"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in body["probabilities"] and abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert np.array(body["image"]).shape == (28, 28)
    r2 = client.post("/predict", json={"pixels": img.tolist()})
    r3 = client.post("/predict", json={"pixels": img.reshape(-1).tolist()})
    assert r2.json()["probabilities"] == pytest.approx(r3.json()["probabilities"])
    assert r2.json()["label"] == body["label"]  # the upload, once resized back, is the same garment
    rb = client.post("/predict/batch", json={"pixels": small_ds.test.images[:5].tolist()})
    assert len(rb.json()["predictions"]) == 5
    rb = client.post("/predict/batch", files=[("files", ("a.png", _png(img), "image/png")),
                                               ("files", ("b.png", _png(img), "image/png"))])
    assert len(rb.json()["predictions"]) == 2
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/model").json()
    assert m["name"] == "lenet5" and len(m["classes"]) == 10 and m["parameters"] == 44426
    assert client.get("/docs").status_code == 200 and "/predict" in client.get("/openapi.json").json()["paths"]
    assert "<canvas" in client.get("/").text


def _bomb():
    # a valid PNG header declaring 20000 x 20000 pixels: over the pixel limit before any decoding
    def chunk(t, d):
        return len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")
    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


@pytest.mark.parametrize("kwargs, status, needle", [
    ({"files": {"file": ("x.txt", b"hello, not an image", "text/plain")}}, 400, "not a readable image"),
    ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty upload"),
    ({"files": {"file": ("x.png", _png(np.zeros((28, 28), np.uint8))[:40], "image/png")}}, 400, "not a readable"),
    ({"files": {"file": ("big.png", b"\0" * 300_000, "image/png")}}, 413, "over the limit"),
    ({"files": {"file": ("bomb.png", _bomb(), "image/png")}}, 400, "pixel"),
    ({"json": {"pixels": [1, 2, 3]}}, 400, "expected 784 values"),
    ({"json": {"pixels": [300] * 784}}, 400, "0..255"),
    ({"json": {"pixels": ["a"] * 784}}, 400, "must be numbers"),
    ({"json": {"image": []}}, 400, "'pixels' field"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty body"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 400, "not supported"),
])
def test_bad_input_is_4xx_with_clear_message(client, kwargs, status, needle):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_unknown_route_and_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405


def test_onnx_backend_agrees(run_dir, small_ds):
    from fmnist.predict import Predictor

    assert main(["export", str(run_dir), "--test-limit", "200", "--check", "200"]) == 0
    a = Predictor(run_dir).probabilities(small_ds.test.images[:200])
    b = Predictor(run_dir, backend="onnx").probabilities(small_ds.test.images[:200])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.999 and np.abs(a - b).max() < 1e-3
