"""The web service: a JSON API and a page, over a saved run. `create_app(run_dir)` -> FastAPI app."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from fmnist.errors import FmnistError
from fmnist.predict import Predictor, image_to_array, pixels_to_array

STATIC = Path(__file__).parent / "static"


class _BodyLimit:
    """ASGI middleware: answer 413 once a request body passes `limit` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over the limit of {self.limit / 1e6:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _Batcher:
    """Collects concurrent requests for up to `wait_s` and runs them through the model as one batch."""

    def __init__(self, predictor: Predictor, max_batch: int = 256, wait_s: float = 0.002) -> None:
        self.predictor, self.max_batch, self.wait_s = predictor, max_batch, wait_s
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def probabilities(self, images: np.ndarray) -> np.ndarray:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((images, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n = len(items[0][0])
            deadline = loop.time() + self.wait_s
            while n < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                    n += len(items[-1][0])
                except TimeoutError:
                    break
            x = np.concatenate([i for i, _ in items])
            try:
                probs = await loop.run_in_executor(None, self.predictor.probabilities, x)
            except Exception as e:  # noqa: BLE001  (handed to every waiting request)
                for _, f in items:
                    f.set_exception(e)
                continue
            start = 0
            for imgs, f in items:
                f.set_result(probs[start:start + len(imgs)])
                start += len(imgs)


def create_app(run_dir: str | os.PathLike, backend: str = "torch", max_body_bytes: int = 5_000_000) -> FastAPI:
    """The FastAPI app serving the model saved in run_dir."""
    predictor = Predictor(run_dir, backend=backend)
    names = predictor.class_names
    batcher = _Batcher(predictor)
    metrics_file = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    from fmnist.models import count_parameters

    model_card = {"name": predictor.meta["model"], "model_params": predictor.meta.get("model_params", {}),
                  "classes": names, "parameters": count_parameters(predictor.model), "backend": backend,
                  "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy")}

    app = FastAPI(title="fmnist", description="Fashion-MNIST classifier: upload an image, get class probabilities.",
                  version="1")

    @app.exception_handler(FmnistError)
    async def _bad_input(_: Request, e: FmnistError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request: " + "; ".join(str(x.get("msg")) for x in e.errors())},
                            status_code=422)

    def _answer(probs: np.ndarray, image: np.ndarray | None = None) -> dict:
        i = int(probs.argmax())
        out = {"label": names[i], "index": i, "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)}}
        if image is not None:
            out["image"] = image.tolist()  # the 28x28 the model saw
        return out

    async def _images(request: Request, batch: bool) -> np.ndarray:
        ctype = request.headers.get("content-type", "")
        invert = request.query_params.get("invert", "auto")
        if invert not in ("auto", "yes", "no"):
            raise FmnistError("query parameter invert must be auto, yes or no")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=256)
            except Exception as e:  # noqa: BLE001  (malformed multipart bodies of every kind)
                raise FmnistError(f"malformed multipart body ({e.__class__.__name__})") from None
            files = form.getlist("file") + form.getlist("files")
            files = [f for f in files if hasattr(f, "read")]
            if not files:
                raise FmnistError("multipart field 'file' with an image is missing")
            if not batch and len(files) > 1:
                raise FmnistError("POST /predict takes one image; use /predict/batch for several")
            arrays = []
            for f in files:
                data = await f.read()
                if not data:
                    raise FmnistError(f"{f.filename or 'file'}: empty upload")
                arrays.append(image_to_array(data, invert, f.filename or "file"))
            return np.stack(arrays)
        if ctype.startswith("application/json"):
            raw = await request.body()
            if not raw:
                raise FmnistError("empty body: send {\"pixels\": [...784 values or 28x28...]}")
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FmnistError("body is not valid JSON") from None
            if not isinstance(body, dict) or "pixels" not in body:
                raise FmnistError("JSON body must be an object with a 'pixels' field")
            try:
                x = pixels_to_array(body["pixels"], "pixels")
            except (ValueError, TypeError):
                raise FmnistError("pixels must be numbers: 784 values or a 28x28 array (a list of them for "
                                  "/predict/batch)") from None
            if not batch and len(x) != 1:
                raise FmnistError("POST /predict takes one image; use /predict/batch for several")
            return x
        if not ctype:
            raise FmnistError("empty body or no content type: upload multipart field 'file' or JSON {\"pixels\"}")
        raise FmnistError(f"content type '{ctype.split(';')[0]}' not supported: use multipart/form-data or "
                          "application/json")

    @app.post("/predict", summary="Classify one image (multipart field `file`, or JSON {\"pixels\": ...})")
    async def predict(request: Request) -> dict:
        x = await _images(request, batch=False)
        probs = await batcher.probabilities(x)
        return _answer(probs[0], x[0])

    @app.post("/predict/batch", summary="Classify many images (multipart fields `files`, or JSON pixels list)")
    async def predict_batch(request: Request) -> dict:
        x = await _images(request, batch=True)
        if len(x) > 1024:
            raise FmnistError(f"{len(x)} images in one batch; the limit is 1024")
        probs = await batcher.probabilities(x)
        return {"predictions": [_answer(p) for p in probs]}

    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model", summary="The model served: name, accuracy, classes, parameters")
    async def model() -> dict:
        return model_card

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    if max_body_bytes:
        app.add_middleware(_BodyLimit, limit=max_body_bytes)
    return app
