"""`catsdogs serve`: the page, the REST API, bad input, limits, concurrency, the schema and the CLI."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from catsdogs import cli  # noqa: E402
from catsdogs.serve import background_server, create_app  # noqa: E402

from serve_support import make_tiny_run, png_bomb, real_photos, synthetic_jpeg  # noqa: E402

JPEG = "image/jpeg"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photos():
    """Eight different little photos, half reddish, half bluish."""
    return [(f"p{i}.jpg", synthetic_jpeg(1000 + i, (200, 70, 60) if i % 2 else (60, 80, 200))) for i in range(8)]


def predict(client, files, **params):
    return client.post("/predict", files=[("file", (name, data, JPEG)) for name, data in files], params=params)


def assert_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


def check_prediction(p, classes, threshold):
    assert set(p) >= {"filename", "label", "probabilities", "threshold"}
    assert list(p["probabilities"]) == classes
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert p["threshold"] == pytest.approx(threshold)
    if p["label"] == "unknown":  # unlike the run's training photos (catsdogs.trust): the probabilities still given
        assert p["unknown"] is True and p["novelty"] is not None
    else:
        assert p["label"] == classes[int(p["probabilities"][classes[1]] >= threshold)]


# ---- page, health, model -------------------------------------------------------------------------

def test_page_is_self_contained_and_phone_ready(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<meta name="viewport" content="width=device-width' in html
    assert re.search(r'<input[^>]*type="file"[^>]*multiple', html)
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html, re.I), "external resource in the page"
    assert not re.search(r"<script[^>]+src=", html, re.I) and "stylesheet" not in html
    assert "@import" not in html and "url(http" not in html
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "fetch(\"predict" in html and "fetch(\"model\")" in html


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_model_info(client, run):
    info = client.get("/model").json()
    assert info["classes"] == ["cat", "dog"] and info["input_size"] == 48
    assert info["model"] == "baseline" and info["backbone"] is None
    assert info["threshold"] == 0.5 and info["threshold_origin"] == "default" and info["tuned_threshold"] is None
    assert info["metrics"] is None and info["max_upload_bytes"] == 10_000_000
    assert info["run"] == run.name  # the folder's name, not a local path


def test_unknown_path_is_json_404(client):
    assert_error(client.get("/nope"), 404)


# ---- predict -------------------------------------------------------------------------------------

def test_predict_one(client, photos):
    body = predict(client, photos[:1]).json()
    assert list(body) == ["predictions"] and len(body["predictions"]) == 1
    p = body["predictions"][0]
    assert p["filename"] == "p0.jpg" and p["gradcam"] is None
    check_prediction(p, ["cat", "dog"], 0.5)


def test_predict_several_keeps_order_and_matches_single(client, photos):
    several = predict(client, photos[:4]).json()["predictions"]
    assert [p["filename"] for p in several] == [name for name, _ in photos[:4]]
    for p, photo in zip(several, photos[:4]):
        check_prediction(p, ["cat", "dog"], 0.5)
        alone = predict(client, [photo]).json()["predictions"][0]
        assert alone["probabilities"]["dog"] == pytest.approx(p["probabilities"]["dog"], abs=1e-5)


@pytest.mark.parametrize("tta", [False, True])
def test_api_matches_predictor(run, photos, tta):
    """The API's numbers are `catsdogs predict`'s (same decoding, resizing, model and TTA)."""
    from catsdogs.images import decode_image, resize
    from catsdogs.predict import Predictor

    predictor = Predictor(run, tta=tta)
    images = np.stack([resize(decode_image(data).pixels, predictor.image_size) for _, data in photos[:3]])
    expected = predictor.probabilities(images)[:, 1]
    with TestClient(create_app(run, tta=tta)) as client:
        got = [p["probabilities"]["dog"] for p in predict(client, photos[:3]).json()["predictions"]]
    assert got == pytest.approx(expected.tolist(), abs=1e-5)


def test_predict_real_photos(client, tmp_path):
    paths = real_photos(tmp_path, ["cat.3.jpg", "dog.1.jpg"])
    if paths is None:
        pytest.skip("the default data zip is absent")
    body = predict(client, [(path.name, path.read_bytes()) for path in paths]).json()
    for p in body["predictions"]:
        check_prediction(p, ["cat", "dog"], 0.5)


def test_png_and_grayscale_are_accepted(client):
    buffer = io.BytesIO()
    Image.new("L", (40, 60), 128).save(buffer, format="PNG")
    response = client.post("/predict", files={"file": ("grey.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200 and response.json()["predictions"][0]["filename"] == "grey.png"


def test_tuned_threshold_and_metrics_are_used(run, photos, tmp_path):
    with TestClient(create_app(run)) as plain:
        p_dog = predict(plain, photos[:1]).json()["predictions"][0]["probabilities"]["dog"]
    tuned = shutil.copytree(run, tmp_path / "tuned")
    for threshold, label in ((p_dog - 1e-4, "dog"), (p_dog + 1e-4, "cat")):
        (tuned / "threshold.json").write_text(json.dumps({"threshold": threshold, "metric": "accuracy"}))
        (tuned / "metrics.json").write_text(json.dumps({"accuracy": 0.75, "n": 6, "data": "/secret/path"}))
        with TestClient(create_app(tuned)) as client:
            info = client.get("/model").json()
            assert info["threshold_origin"] == "tuned" and info["threshold"] == pytest.approx(threshold)
            assert info["metrics"] == {"accuracy": 0.75, "n": 6}
            p = predict(client, photos[:1]).json()["predictions"][0]
            assert p["threshold"] == pytest.approx(threshold) and p["label"] == label


def test_threshold_argument_wins(run, photos):
    with TestClient(create_app(run, threshold=0.0)) as client:
        assert client.get("/model").json()["threshold_origin"] == "argument"
        assert predict(client, photos[:1]).json()["predictions"][0]["label"] == "dog"


# ---- Grad-CAM ------------------------------------------------------------------------------------

def test_explain_adds_png_overlay(client, photos):
    p = predict(client, photos[:2], explain="true").json()["predictions"][0]
    cam = p["gradcam"]
    assert cam["target"] == p["label"] and cam["layer"]
    assert cam["overlay"].startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(cam["overlay"].split(",", 1)[1])))
    assert image.format == "PNG" and image.size == (64, 64)


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data, status, reason", [
    ("notes.txt", b"certainly not a photo\n" * 10, 415, "not an image"),
    ("cut.jpg", synthetic_jpeg(7, (90, 90, 90), size=256)[:1500], 400, "truncated"),
    ("empty.jpg", b"", 400, "empty"),
    ("bomb.png", png_bomb(), 413, "bomb"),
    ("big.png", png_bomb(8000), 413, "8000x8000"),
    ("tiny.png", None, 422, "too small"),
])
def test_bad_images_are_4xx_json(client, photos, name, data, status, reason):
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        data = buffer.getvalue()
    error = assert_error(predict(client, [(name, data)]), status)
    assert error.startswith(f"{name}: ") and reason in error
    assert predict(client, photos[:1]).status_code == 200  # still answering


def test_one_bad_file_refuses_the_request(client, photos):
    error = assert_error(predict(client, [photos[0], ("x.txt", b"hello" * 20)]), 415)
    assert error.startswith("x.txt:")


def test_empty_body_and_missing_field(client):
    assert "missing field 'file'" in assert_error(client.post("/predict"), 422)
    assert "missing field 'file'" in assert_error(client.post("/predict", files={"photo": ("a.jpg", b"x")}), 422)
    assert_error(client.post("/predict", content=b"", headers={"content-type": "multipart/form-data; boundary=x"}),
                 422)
    assert_error(client.post("/predict", json={"file": "a.jpg"}), 422)
    assert_error(client.get("/predict"), 405)


def test_too_many_files(client, photos):
    assert "too many files" in assert_error(predict(client, photos[:1] * 33), 400)


# ---- upload limit --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_limit_app(run):
    return create_app(run, max_upload_mb=0.05)  # 50 kB


def test_oversized_upload_is_413(small_limit_app, photos):
    with TestClient(small_limit_app) as client:
        error = assert_error(predict(client, [("big.jpg", b"\xff" * 60_000)]), 413)
        assert "limit is 0.05 MB" in error
        assert predict(client, photos[:1]).status_code == 200


def test_chunked_upload_is_counted(small_limit_app):
    def body():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 10_000

    with TestClient(small_limit_app) as client:
        response = client.post("/predict", content=body(),
                               headers={"content-type": "multipart/form-data; boundary=x"})
        assert "content-length" not in response.request.headers
        assert_error(response, 413)


def test_declared_length_refused_before_reading(small_limit_app):
    """A Content-Length over the limit is answered before one body byte is read (raw ASGI)."""
    import asyncio

    sent, reads = [], []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "headers": [(b"content-length", b"999999999"), (b"content-type", b"multipart/form-data; boundary=x")],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
             "root_path": "", "app": small_limit_app}
    asyncio.run(small_limit_app(scope, receive, send))
    assert sent[0]["status"] == 413 and not reads
    assert json.loads(sent[1]["body"])["error"].startswith("upload too large")


def test_streamed_upload_stops_early_over_a_real_socket(small_limit_app):
    """A chunked upload of 64 MB to a real server is cut off long before it is all sent."""
    produced = []

    def body():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(1024):
            produced.append(1)
            yield b"\0" * 65_536

    with background_server(small_limit_app) as url:
        try:
            response = httpx.post(url + "predict", content=body(), timeout=20,
                                  headers={"content-type": "multipart/form-data; boundary=x"})
            assert_error(response, 413)
        except httpx.TransportError:
            pass  # the server answered 413 and closed while the client was still sending
        assert len(produced) < 512, f"{len(produced) * 64} kB sent before the refusal"
        assert httpx.get(url + "healthz", timeout=10).json() == {"status": "ok"}


# ---- concurrency ---------------------------------------------------------------------------------

def test_concurrent_requests_match_sequential(client, photos):
    def dog(photo):
        response = predict(client, [photo])
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["probabilities"]["dog"]

    sequential = [dog(photo) for photo in photos]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(dog, photos * 3))
    assert concurrent == pytest.approx(sequential * 3, abs=1e-6)


# ---- OpenAPI -------------------------------------------------------------------------------------

def test_openapi_schema_describes_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/model", "/healthz"} <= set(schema["paths"])
    components = schema["components"]["schemas"]
    prediction = components["PredictionOut"]["properties"]
    assert {"filename", "label", "probabilities", "threshold", "gradcam"} <= set(prediction)
    assert components["PredictResponse"]["properties"]["predictions"]["items"]["$ref"].endswith("/PredictionOut")
    assert {"classes", "input_size", "backbone", "model", "threshold", "threshold_origin", "metrics"} <= set(
        components["ModelOut"]["properties"])
    post = schema["paths"]["/predict"]["post"]
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictResponse")
    for status in ("400", "413", "415", "422"):
        assert post["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "explain" in {parameter["name"] for parameter in post["parameters"]}
    body_ref = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert components[body_ref]["properties"]["file"]["type"] == "array"


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_bad_run_exits_2(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("catsdogs serve: error:") and "not a catsdogs run" in error and error.count("\n") == 1


def test_cli_bad_options_exit_2(run, capsys):
    assert cli.main(["serve", str(run), "--max-upload-mb", "0"]) == 2
    assert cli.main(["serve", str(run), "--threshold", "2"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_cli_busy_port_exits_2(run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve", str(run), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_concurrent_requests_share_model_calls(run, photos):
    """Micro-batching: eight requests at once get their own answers, in fewer model calls than requests."""
    from catsdogs.images import decode_image, resize
    from catsdogs.predict import Predictor

    app = create_app(run)
    predictor = Predictor(run)
    alone = {name: predictor.predict_images(resize(decode_image(data).pixels, predictor.image_size))[0].probabilities
             for name, data in photos}
    batcher = app.state.engine.batcher
    batcher.max_wait = 0.2  # generous, so that the concurrent requests surely meet
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda item: predict(client, [item]).json(), photos[:8]))
    for (name, _), body in zip(photos[:8], bodies):
        assert body["predictions"][0]["filename"] == name
        assert body["predictions"][0]["probabilities"] == pytest.approx(alone[name], abs=1e-5)
    assert batcher.batches < len(bodies)


def test_cli_port_out_of_range_exits_2_and_listen_says_why(run, capsys):
    from catsdogs.errors import UsageError
    from catsdogs.serve import listen

    assert cli.main(["serve", str(run), "--port", "70000"]) == 2
    assert "--port: must be at most 65535" in capsys.readouterr().err
    with pytest.raises(UsageError, match="port must be at most 65535") as error:
        listen("127.0.0.1", 70000)
    assert error.value.parameter == "port"
