"""The web service: a JSON API and a page, over a saved run. `create_app(run_dir)` -> FastAPI app."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from fmnist.data import FASHION_CLASSES
from fmnist.errors import FmnistError
from fmnist.predict import PREPROCESS, Predictor, image_to_array, pixels_to_array
from fmnist.rundir import RunDir

STATIC = Path(__file__).parent / "static"


MAX_FILES = 256  # uploads in one multipart request
DRAIN_BYTES = 64_000_000  # a refused body is read (and dropped) up to this much before the 413 answer
MAX_BATCH = 1024  # images in one /predict/batch request
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/openapi.json"})  # answered without the token: no model output


class _Abort(Exception):
    """Stops reading a request; the middleware answers with `status` and `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _BodyLimit:
    """ASGI middleware: answer 413 once a request body passes `limit` bytes (declared or streamed), and 408 when
    the body stops arriving for `read_timeout` seconds (a client that never sends it must not hold a connection)."""

    def __init__(self, app: Any, limit: int, read_timeout: float) -> None:
        self.app, self.limit, self.read_timeout = app, limit, read_timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"request body over the limit of {self.limit / 1e6:g} MB"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive)  # a client still sending when the server closes sees only a reset
            return await _reject(send, 413, too_large)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            try:
                msg = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise _Abort(408, f"request body not received within {self.read_timeout:g} s") from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _Abort(413, too_large)
            return msg

        try:
            await self.app(scope, limited, send)
        except _Abort as e:
            if e.status == 413:
                await self._drain(receive)
            await _reject(send, e.status, e.detail)

    async def _drain(self, receive: Any) -> None:
        """Read and discard the rest of a refused body (up to DRAIN_BYTES, each part within the read timeout), so
        that the client reads the 413 answer instead of a connection reset."""
        seen = 0
        try:
            while seen < DRAIN_BYTES:
                msg = await asyncio.wait_for(receive(), self.read_timeout)
                if msg["type"] != "http.request":
                    return
                seen += len(msg.get("body", b""))
                if not msg.get("more_body"):
                    return
        except TimeoutError:
            return


async def _reject(send: Any, status: int, detail: str) -> None:
    """Answer an ASGI request with `status` and a JSON {"detail": ...}, closing the connection (the middlewares'
    refusals, sent before the app sees the request)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _Gate:
    """ASGI middleware: answer only requests whose Host header names this service (a page on another site that
    reaches a local service through DNS rebinding sends its own host name) and, when the service has a token,
    carry it as `Authorization: Bearer TOKEN` (every path but the page, /health and the API description).

    Written here rather than Starlette's TrustedHostMiddleware: that one splits the Host header at its first
    colon (an IPv6 host such as [::1]:8000 never matches) and answers in plain text, not the JSON every other
    refusal uses."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...], token: str | None) -> None:
        self.app, self.token = app, token
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if not self.any_host and host not in self.allowed:
            return await _reject(send, 400, f"Host '{host[:60]}' is not a name this service answers to "
                                                        "(start it with --allow-host NAME to add one)")
        if self.token is not None and scope["path"] not in OPEN_PATHS and not scope["path"].startswith("/docs-"):
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return await _reject(send, 401, "this service needs its token: send the header "
                                                           "'Authorization: Bearer TOKEN' (the page: open the "
                                                           "address the service printed, ending in #token=...)")
        return await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Batcher:
    """Collects concurrent requests for up to `wait_s` and runs them through the model as one batch."""

    def __init__(self, predictor: Predictor, max_batch: int = 256, wait_s: float = 0.002) -> None:
        self.predictor, self.max_batch, self.wait_s = predictor, max_batch, wait_s
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def logits(self, images: np.ndarray) -> np.ndarray:
        if self.queue is None or self.loop is not asyncio.get_running_loop():  # first use, or the app serves anew
            self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
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
                probs = await loop.run_in_executor(None, self.predictor.logits, x)
            except Exception as e:  # noqa: BLE001  (handed to every waiting request)
                for _, f in items:
                    f.set_exception(e)
                continue
            start = 0
            for imgs, f in items:
                f.set_result(probs[start:start + len(imgs)])
                start += len(imgs)


def create_app(run_dir: str | os.PathLike, backend: str = "torch", max_body_bytes: int = 5_000_000,
               read_timeout: float = 30.0, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
               token: str | None = None, max_preparing: int | None = None) -> FastAPI:
    """The FastAPI app serving the model saved in run_dir (request bodies: at most max_body_bytes, each part
    arriving within read_timeout seconds).

    allowed_hosts: the host names requests may be addressed to (the Host header; "*" for any). token: when given,
    every request for a prediction, an explanation or the model card carries `Authorization: Bearer TOKEN`.
    max_preparing: pictures decoded and prepared at once, in worker threads off the event loop (default: the
    CPU count), so that one client's large picture never holds up the others.
    """
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
        raise FmnistError("the service's token must be at least 16 printable ASCII characters")
    predictor = Predictor(run_dir, backend=backend)
    bound: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}  # one per event loop that serves the app

    async def off_loop(fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if loop not in bound:
            bound.clear()
            bound[loop] = asyncio.Semaphore(max_preparing or os.cpu_count() or 1)
        async with bound[loop]:
            return await loop.run_in_executor(None, fn, *args)

    if predictor.onnx is not None and predictor.onnx.warning:
        import logging

        logging.getLogger("uvicorn.error").warning(predictor.onnx.warning)
    names = predictor.class_names
    batcher = _Batcher(predictor)
    metrics_file = RunDir(run_dir).metrics
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    from fmnist.models import count_parameters

    model_card = {"name": predictor.meta["model"], "model_params": predictor.meta.get("model_params", {}),
                  "classes": names, "parameters": count_parameters(predictor.model),
                  "backend": backend if predictor.onnx is None else f"onnx ({predictor.onnx.path.name})",
                  "calibration": predictor.calibration.to_dict() if predictor.calibration else None,
                  "warning": predictor.onnx.warning if predictor.onnx is not None else None,
                  "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy"),
                  "fashion": tuple(names) == FASHION_CLASSES}
    what = "Fashion-MNIST classifier" if model_card["fashion"] else \
        f"classifier of 28x28 pictures into {len(names)} classes"

    app = FastAPI(title="fmnist", description=f"{what}: upload an image, get class probabilities.",
                  version="1", docs_url=None, redoc_url=None)

    @app.exception_handler(FmnistError)
    async def _bad_input(_: Request, e: FmnistError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, e: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it: the client left mid-upload, which is no server error

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request: " + "; ".join(str(x.get("msg")) for x in e.errors())},
                            status_code=422)

    def _answers(logits: np.ndarray, images: np.ndarray, show: bool) -> list[dict]:
        """One answer per image; probabilities, sets and warnings computed for the whole batch at once."""
        probs = predictor.predict_proba(images, logits)  # calibrated with the run's temperature when it has one
        sets = predictor.predict_set(images, probs) or [None] * len(probs)
        out = []
        # warning: a sentence when the picture looks unlike the training data (blank, or an unusual energy score)
        # set: the classes that hold the true one with probability `set_level` (None: the model has no calibration)
        for p, image, warning, s in zip(probs, images, predictor.warnings(images, logits), sets, strict=True):
            i = int(p.argmax())
            a = {"label": names[i], "index": i, "probabilities": {n: float(v) for n, v in zip(names, p, strict=True)},
                 "set": s, "set_level": predictor.calibration.level if predictor.calibration else None,
                 "warning": warning}
            if show:
                a["image"] = image.tolist()  # the 28x28 the model saw
            out.append(a)
        return out

    async def _images(request: Request, batch: bool) -> tuple[np.ndarray, list[str]]:
        ctype = request.headers.get("content-type", "")
        invert = request.query_params.get("invert", "auto")
        if invert not in ("auto", "yes", "no"):
            raise FmnistError("query parameter invert must be auto, yes or no")
        preprocess = request.query_params.get("preprocess", "dataset")
        if preprocess not in PREPROCESS:
            raise FmnistError(f"query parameter preprocess must be one of {', '.join(PREPROCESS)}")
        if ctype.startswith("multipart/form-data"):
            from starlette.exceptions import HTTPException
            from starlette.formparsers import MultiPartException

            try:
                form = await request.form(max_files=MAX_FILES)
            except (_Abort, ClientDisconnect):
                raise
            except (MultiPartException, HTTPException) as e:
                message = str(getattr(e, "message", None) or getattr(e, "detail", ""))
                if "Too many files" in message:
                    raise FmnistError(f"more than {MAX_FILES} files in one request; send at most {MAX_FILES} "
                                      f"(or JSON pixels, up to {MAX_BATCH} images)") from None
                raise FmnistError(f"malformed multipart body ({message})") from None
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
                arrays.append(await off_loop(image_to_array, data, invert, f.filename or "file", preprocess))
            return np.stack(arrays), []
        if ctype.startswith("application/json"):
            raw = await request.body()
            if not raw:
                raise FmnistError("empty body: send {\"pixels\": [...784 values or 28x28...]}")
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FmnistError("body is not valid JSON") from None
            except RecursionError:
                raise FmnistError("JSON nested too deeply; pixels are at most 3 levels deep") from None
            if not isinstance(body, dict) or "pixels" not in body:
                raise FmnistError("JSON body must be an object with a 'pixels' field")
            x, note = await off_loop(pixels_to_array, body["pixels"], "pixels")
            if not batch and len(x) != 1:
                raise FmnistError("POST /predict takes one image; use /predict/batch for several")
            return x, [note] if note else []
        if not ctype:
            raise FmnistError("empty body or no content type: upload multipart field 'file' or JSON {\"pixels\"}")
        raise FmnistError(f"content type '{ctype.split(';')[0]}' not supported: use multipart/form-data or "
                          "application/json")

    @app.post("/predict", summary="Classify one image (multipart field `file`, or JSON {\"pixels\": ...})",
              responses=ERRORS, openapi_extra=_body(batch=False))
    async def predict(request: Request) -> dict:
        x, notes = await _images(request, batch=False)
        answer = _answers(await batcher.logits(x), x, show=True)[0]
        if notes:
            answer["notes"] = notes  # what was done to read the input, e.g. 0..1 floats scaled to 0..255
        return answer

    @app.post("/predict/batch", summary="Classify many images (multipart fields `files`, or JSON pixels list)",
              responses=ERRORS, openapi_extra=_body(batch=True))
    async def predict_batch(request: Request) -> dict:
        x, notes = await _images(request, batch=True)
        if len(x) > MAX_BATCH:
            raise FmnistError(f"{len(x)} images in one batch; the limit is {MAX_BATCH}")
        return {"predictions": _answers(await batcher.logits(x), x, show=False), **({"notes": notes} if notes else {})}

    # explanations run on their own copy of the model, one at a time: Grad-CAM hooks a layer while it works, and
    # the batcher's concurrent forward passes must not pass through that hook
    import copy
    import threading

    from fmnist.explain import cam_layer

    explainer, explain_lock = copy.deepcopy(predictor.model), threading.Lock()
    auto_method = "gradcam" if cam_layer(explainer) is not None else "integrated_gradients"

    def _explain(x: np.ndarray, target: int, method: str) -> np.ndarray:
        from fmnist.explain import saliency

        with explain_lock:
            return saliency(explainer, x, [target], method=method)[0]

    @app.post("/explain", summary="What drove the prediction of one image: a 28x28 heatmap (Grad-CAM or "
                                  "integrated gradients), with the prediction",
              responses=ERRORS, openapi_extra=_body(batch=False, explain=True))
    async def explain(request: Request) -> dict:
        from fmnist.explain import METHODS

        method = request.query_params.get("method", "auto")
        if method not in METHODS:
            raise FmnistError(f"query parameter method must be one of {', '.join(METHODS)}")
        wanted = request.query_params.get("target")
        if wanted is not None and wanted not in names:
            raise FmnistError(f"query parameter target must be a class name: {', '.join(names)}")
        x, notes = await _images(request, batch=False)
        answer = _answers(await batcher.logits(x), x, show=True)[0]
        target = names.index(wanted) if wanted is not None else answer["index"]
        method = auto_method if method == "auto" else method
        heat = await asyncio.get_running_loop().run_in_executor(None, _explain, x, target, method)
        answer.update(target=names[target], method=method, heatmap=np.round(heat, 3).tolist())
        if notes:
            answer["notes"] = notes
        return answer

    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model", summary="The model served: name, accuracy, classes, parameters")
    async def model() -> dict:
        return model_card

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # the API's page, with Swagger UI's script and style served from the package (swagger-ui-bundle): no
    # third-party script runs in the service's origin, and the page works offline
    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="openapi.json", title="fmnist API",
                                   swagger_js_url="docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="docs-assets/swagger-ui.css",
                                   swagger_favicon_url="docs-assets/favicon-32x32.png")

    @app.get("/docs-assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        from swagger_ui_bundle import swagger_ui_path

        if name not in DOCS_ASSETS:
            raise FmnistError(f"no such asset: {name[:60]}")
        return FileResponse(Path(swagger_ui_path) / name, media_type=DOCS_ASSETS[name])

    app.add_middleware(_BodyLimit, limit=max_body_bytes or float("inf"), read_timeout=read_timeout)
    app.add_middleware(_Gate, allowed_hosts=tuple(allowed_hosts), token=token)  # outermost: checked first
    return app


DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon-32x32.png": "image/png"}


class Problem(BaseModel):
    """Every refused request: one line saying what is wrong."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "bad input: an unreadable picture, pixels of the wrong shape or range, "
                                           "an unknown query value, a Host this service does not answer to"},
    401: {"model": Problem, "description": "the service has a token and the request did not carry it"},
    408: {"model": Problem, "description": "the body stopped arriving"},
    413: {"model": Problem, "description": "the body is over the service's limit"},
    422: {"model": Problem, "description": "a request the API cannot parse"},
}


def _body(batch: bool, explain: bool = False) -> dict[str, Any]:
    """The OpenAPI description of a prediction request, which the handlers read themselves (one picture or JSON
    pixels, with query options) so that every kind of bad input gets its own one-line answer."""
    field = "files" if batch else "file"
    picture = {"type": "string", "format": "binary", "description": "a PNG, JPEG, GIF, BMP, WebP or TIFF picture"}
    pixels = {"description": ("a list of images: each 784 values or 28x28 rows" if batch else
                              "one image: 784 values or 28x28 rows") + " of 0..255 numbers (or 0..1 floats)",
              "type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "array"}]}}
    params = [
        {"name": "invert", "in": "query", "required": False, "description": "negate the picture: auto (a light "
         "background is negated), yes or no", "schema": {"type": "string", "enum": ["auto", "yes", "no"],
                                                         "default": "auto"}},
        {"name": "preprocess", "in": "query", "required": False, "description": "how a picture becomes 28x28",
         "schema": {"type": "string", "enum": list(PREPROCESS), "default": "dataset"}},
    ]
    if explain:
        from fmnist.explain import METHODS

        params += [{"name": "method", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": list(METHODS), "default": "auto"}},
                   {"name": "target", "in": "query", "required": False, "description": "a class name (default: "
                    "the predicted class)", "schema": {"type": "string"}}]
    return {"parameters": params, "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": {
            field: {"type": "array", "items": picture} if batch else picture}}},
        "application/json": {"schema": {"type": "object", "required": ["pixels"],
                                        "properties": {"pixels": pixels}}}}}}


def host_names(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host header names a service bound to `host` answers to: the bound address, the loopback names, the
    `extra` ones ("*": any) and, bound to every interface, this machine's own names and addresses."""
    import socket

    hosts = {*LOOPBACK_HOSTS, host, *extra}
    if host in ("0.0.0.0", "::", ""):
        names = {socket.gethostname(), socket.getfqdn()}
        for n in list(names):
            try:
                hosts |= {a[4][0] for a in socket.getaddrinfo(n, None)}
            except OSError:
                pass
        hosts |= names
    return tuple(sorted(hosts))


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
          max_upload_mb: float = 5.0, allow_hosts: tuple[str, ...] = (), token: str | None = None,
          log: Any = print) -> None:
    """`fmnist serve` in one call: check the settings, build the app, bind the socket (a bad host or a port in use
    is one line, before uvicorn starts), say the address to open, serve until Ctrl-C. token "auto": a random one;
    a service bound beyond loopback without a token gets a warning."""
    import socket
    import sys

    import uvicorn

    if not 0 <= port <= 65535:
        raise FmnistError(f"--port must be in 0..65535, got {port}")
    if not 0 < max_upload_mb < 1e6:
        raise FmnistError(f"--max-upload-mb must be a positive number of megabytes (below 1,000,000), got "
                          f"{max_upload_mb}")
    if token == "auto":
        import secrets

        token = secrets.token_urlsafe(24)
    app = create_app(run_dir, backend=backend, max_body_bytes=int(max_upload_mb * 1e6),
                     allowed_hosts=host_names(host, allow_hosts), token=token)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise FmnistError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else "127.0.0.1" if host in ("0.0.0.0", "") else host
    log(f"serving {run_dir} at http://{shown}:{bound}/" + (f"#token={token}" if token else "")
        + "  (the page; the API at /docs; Ctrl-C stops)")
    if not is_loopback(host) and token is None:
        print(f"warning: listening on {host} without a token: anyone who can reach this port can use the model "
              "(--token auto makes one)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    server.run(sockets=[sock])
