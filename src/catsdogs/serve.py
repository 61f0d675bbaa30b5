"""`catsdogs serve`: a web page and a REST API over one trained RUN (FastAPI, run by uvicorn).

Endpoints: `GET /` (the page), `POST /predict` (multipart field `file`, one or several images;
`?explain=true` adds Grad-CAM overlays), `GET /model`, `GET /healthz`; `GET /openapi.json` describes them.
Every error is JSON `{"error": "..."}`. The model is loaded once; a lock serialises every model call
(Keras models are not guaranteed thread-safe) and that work runs in worker threads, off the event loop.
"""

from __future__ import annotations

import base64
import html
import io
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from catsdogs import __version__
from catsdogs.errors import UsageError, one_line
from catsdogs.images import ImageError, decode_image, resize
from catsdogs.memory import release_memory
from catsdogs.options import check_limit, check_threshold
from catsdogs.predict import Predictor
from catsdogs.run_files import METRICS, read_config, read_json
from catsdogs.serve_page import PAGE_HEADERS, SecurityHeaders, page_html
from catsdogs.upload_limit import UploadLimit

DEFAULT_MAX_UPLOAD_MB = 10
MAX_UPLOAD_MB_LIMIT = 4096  # one upload held in memory: more is a typo (1e308, inf)
MAX_FILES = 32
DECODE_SLOTS = 2  # photos decoded at once: bounds memory (a 50-megapixel photo is 150 MB decoded)
TRIM_ABOVE_PIXELS = 4_000_000  # after decoding a larger upload, freed memory goes back to the OS
OVERLAY_SIDE = 320  # longest side of the Grad-CAM overlay sent back, in pixels


# ---- response models (they are the OpenAPI schema) -----------------------------------------------

class ErrorOut(BaseModel):
    error: str = Field(description="what went wrong, one line")


class GradCamOut(BaseModel):
    overlay: str = Field(description="the photo with the Grad-CAM heat map blended in, a data:image/png;base64 URI")
    layer: str = Field(description="the feature-map layer explained")
    target: str = Field(description="the class the heat map argues for (the predicted label)")


class PredictionOut(BaseModel):
    filename: str
    label: str = Field(description="two classes: classes[1] when p(classes[1]) >= threshold, else classes[0]; "
                       "more: the most probable class")
    probabilities: dict[str, float] = Field(description="each class's probability; they sum to 1")
    unknown: bool = Field(False, description="true when the photo looks unlike the training photos (label "
                          "\"unknown\"; needs RUN/calibration.json)")
    novelty: float | None = Field(None, description="higher = less like the training photos (null without "
                                  "RUN/calibration.json)")
    threshold: float | None = Field(description="decision threshold on p(classes[1]) (two classes; else null)")
    gradcam: GradCamOut | None = Field(None, description="only with ?explain=true")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut] = Field(description="one per uploaded file, in upload order")


class ModelOut(BaseModel):
    run: str = Field(description="the RUN folder's name")
    model: str = Field(description="model name (baseline, augmented, features, transfer, finetune, ...)")
    keras_name: str
    backbone: str | None
    classes: list[str]
    input_size: int = Field(description="images are resized to input_size x input_size pixels")
    threshold: float
    threshold_origin: Literal["tuned", "argument", "default"]
    tuned_threshold: float | None
    tta: bool
    metrics: dict[str, Any] | None = Field(description="RUN/metrics.json (from `catsdogs evaluate`) when present")
    max_upload_bytes: int
    max_files: int
    version: str


class HealthOut(BaseModel):
    status: Literal["ok"]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "empty, truncated or otherwise undecodable image; too many files"},
    413: {"model": ErrorOut, "description": "upload over the size limit, or an image with too many pixels"},
    415: {"model": ErrorOut, "description": "not an image"},
    422: {"model": ErrorOut, "description": "missing `file` field, or an image too small"},
    501: {"model": ErrorOut, "description": "?explain=true but Grad-CAM is not available for this model"},
}


# ---- the model behind the API --------------------------------------------------------------------

@dataclass(frozen=True)
class Photo:
    filename: str
    model_input: np.ndarray  # uint8 S x S x 3
    display: np.ndarray  # uint8, longest side <= OVERLAY_SIDE, for the Grad-CAM overlay


class MicroBatcher:
    """Runs concurrent requests' photos through the model together: the first request of a batch waits at most
    `max_wait` seconds for others to join, up to `max_batch` photos, then one model call answers them all."""

    def __init__(self, run_batch, max_batch: int = 32, max_wait: float = 0.004) -> None:
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait
        self.queue: queue.Queue = queue.Queue()
        self.batches = 0  # model calls made, for tests and logs
        threading.Thread(target=self._loop, name="catsdogs-microbatcher", daemon=True).start()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        answer: Future = Future()
        self.queue.put((images, answer))
        return answer.result()

    def _loop(self) -> None:
        while True:
            waiting = [self.queue.get()]
            deadline = time.monotonic() + self.max_wait
            while sum(len(images) for images, _ in waiting) < self.max_batch:
                try:
                    waiting.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                outputs = self.run_batch(np.concatenate([images for images, _ in waiting]))
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for _, answer in waiting:
                    answer.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for images, answer in waiting:
                answer.set_result(outputs[start:start + len(images)])
                start += len(images)


class Engine:
    """A loaded RUN: uploads decoded a few at a time, predictions micro-batched, Grad-CAM under a lock."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._model_lock = threading.Lock()
        self._decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self.batcher = MicroBatcher(predictor.scores)  # probabilities + a novelty column (catsdogs.trust)

    def decode(self, filename: str, data: bytes) -> Photo:
        """Decode one upload into the model's input (and a small copy for overlays); HTTPException if bad."""
        with self._decode_slots:
            try:
                decoded = decode_image(data, at_least=self.predictor.image_size)  # as catsdogs predict
            except ImageError as error:
                raise HTTPException(_status_of(str(error)), f"{filename}: {error}") from None
            pixels, large = decoded.pixels, decoded.original_pixels > TRIM_ABOVE_PIXELS
            photo = Photo(filename, resize(pixels, self.predictor.image_size), _shrink(pixels, OVERLAY_SIDE))
            del decoded, pixels
        if large:  # the full-size decode is freed: give its memory back to the OS, not to glibc's arenas
            release_memory()
        return photo

    def probabilities(self, photos: list[Photo]) -> np.ndarray:
        """n x (N + 1): class probabilities, then novelty (NaN without calibration), through the predictor."""
        return self.batcher(np.stack([photo.model_input for photo in photos]))

    def gradcam(self, photo: Photo, target: int) -> GradCamOut:
        """The Grad-CAM overlay of `photo` for class index `target`."""
        from catsdogs.explain import gradcam, overlay

        with self._model_lock:
            cam = gradcam(self.predictor.model, photo.model_input, target=target)
        return GradCamOut(overlay=png_data_uri(overlay(photo.display, cam.heatmap)), layer=cam.layer,
                          target=self.predictor.classes[target])


def _status_of(reason: str) -> int:
    """HTTP status for an `ImageError` reason from `decode_image`."""
    if "not an image" in reason:
        return 415
    if reason.startswith(("too large", "decompression bomb", "file larger")):
        return 413
    if reason.startswith("too small"):
        return 422
    return 400  # empty, truncated, corrupt


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR), dtype=np.uint8)


def png_data_uri(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _model_info(engine: Engine, threshold_argument: float | None, max_upload_bytes: int) -> ModelOut:
    predictor = engine.predictor
    config = read_config(predictor.run)
    metrics_path = predictor.run / METRICS
    metrics = read_json(metrics_path) if metrics_path.exists() else None
    if isinstance(metrics, dict):
        metrics.pop("data", None)  # a local path: not the business of API clients
    origin = "argument" if threshold_argument is not None else "tuned" if predictor.tuned_threshold is not None \
        else "default"
    return ModelOut(run=predictor.run.name, model=str(config.get("model", "unknown")),
                    keras_name=predictor.model.name, backbone=config.get("backbone"), classes=predictor.classes,
                    input_size=predictor.image_size, threshold=predictor.threshold, threshold_origin=origin,
                    tuned_threshold=predictor.tuned_threshold, tta=predictor.tta, metrics=metrics,
                    max_upload_bytes=max_upload_bytes,
                    max_files=MAX_FILES, version=__version__)


# ---- the app -------------------------------------------------------------------------------------

def create_app(run: Path, *, threshold: float | None = None, tta: bool = False,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, engine: str = "keras",
               samples: np.ndarray | None = None) -> FastAPI:
    """The API and page for RUN; loads the model now (a `UsageError` when RUN is not a usable run)."""
    run = Path(run)
    max_upload_mb = check_limit(max_upload_mb, "max_upload_mb", MAX_UPLOAD_MB_LIMIT)  # before loading the model
    check_threshold(threshold)
    read_config(run)
    max_upload_bytes = int(max_upload_mb * 1_000_000)
    engine = Engine(Predictor(run, threshold=threshold, tta=tta, engine=engine, samples=samples))
    info = _model_info(engine, threshold, max_upload_bytes)

    # /docs and /redoc would load scripts and fonts from public CDNs: off (the schema stays at /openapi.json);
    # names in the description are escaped (renderers of the schema read it as Markdown and HTML)
    classes, name = " or ".join(html.escape(c) for c in info.classes), html.escape(info.run)
    app = FastAPI(title="catsdogs", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Classify photos as {classes} with the run {name}.")
    app.state.engine, app.state.info, app.state.max_upload_bytes = engine, info, max_upload_bytes
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: the page's CSP on every response, errors included
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers=PAGE_HEADERS)

    @app.get("/healthz", response_model=HealthOut, summary="liveness check")
    async def healthz() -> HealthOut:
        return HealthOut(status="ok")

    @app.get("/model", response_model=ModelOut, summary="the model being served")
    async def model_info(request: Request) -> ModelOut:
        return request.app.state.info

    @app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES,
              summary="classify one or several photos")
    async def predict(request: Request,
                      file: list[UploadFile] = File(description="one or several image files (JPEG, PNG, ...)"),
                      explain: bool = Query(False, description="add a Grad-CAM overlay per image")) -> PredictResponse:
        engine: Engine = request.app.state.engine
        if len(file) > MAX_FILES:
            raise HTTPException(400, f"too many files: {len(file)} (limit {MAX_FILES} a request)")
        photos = []
        for index, upload in enumerate(file):
            name = upload.filename or f"file {index + 1}"
            photos.append(await run_in_threadpool(engine.decode, name, await upload.read()))
        probabilities = await run_in_threadpool(engine.probabilities, photos)
        predictor = engine.predictor
        results = []
        for photo, row in zip(photos, probabilities):
            prediction = predictor.as_prediction(photo.filename, row[:-1], row[-1])
            cam = None
            if explain:
                target = int(predictor.predicted_index(row[:-1])[0])  # the class, also for an "unknown" photo
                cam = await run_in_threadpool(_explain, engine, photo, target)
            results.append(PredictionOut(filename=photo.filename, label=prediction.label,
                                         probabilities=prediction.probabilities, unknown=prediction.unknown,
                                         novelty=prediction.novelty,
                                         threshold=predictor.threshold if len(predictor.classes) == 2 else None,
                                         gradcam=cam))
        return PredictResponse(predictions=results)

    return app


def _explain(engine: Engine, photo: Photo, target: int) -> GradCamOut:
    from catsdogs.errors import CatsdogsError

    try:
        return engine.gradcam(photo, target)
    except CatsdogsError as error:  # e.g. a model without a feature map to explain
        raise HTTPException(501, f"Grad-CAM is not available for this model: {error}") from None


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": "one line"}`."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        message = one_line(error, None, first_line=True) if str(error).strip() else ""
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {message}"}, status_code=500)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query"))
        if item.get("type") == "missing":
            parts.append(f"missing field '{where}' (send the image as multipart form field 'file')"
                         if where == "file" else f"missing field '{where}'")
        else:
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


# ---- running it ----------------------------------------------------------------------------------

def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); OSError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def listen(host: str, port: int) -> socket.socket:
    """`bind_socket` for a server about to start (serve, review): a one-line UsageError naming the address when
    the port is busy, out of range or the host unknown, before anything says where to connect."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port must be at most 65535 (0: any free port), got {port}", "port")
    try:
        return bind_socket(host, port)
    except OSError as error:
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}", "port") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _uvicorn_server(app: FastAPI, log_level: str):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_keep_alive=5,
                                         timeout_graceful_shutdown=5))


def serve_forever(app: FastAPI, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve `app` on an already bound socket until Ctrl+C / SIGTERM."""
    _uvicorn_server(app, log_level).run(sockets=[sock])


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", *, start_timeout: float = 30,
                      log_level: str = "warning") -> Iterator[str]:
    """Run `app` in a daemon thread on a free port of `host`; yields the base URL, stops it on exit."""
    sock = bind_socket(host, 0)
    server = _uvicorn_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="catsdogs-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
