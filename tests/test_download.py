"""catsdogs.download against a loopback HTTP server (Range, no Range, drops, 404) and file:// URLs."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from catsdogs.download import DEFAULT_URL, URL_ENV, download, part_path, resolve_url
from catsdogs.errors import CatsdogsError, UsageError

PAYLOAD = random.Random(0).randbytes(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 16_384


class Handler(BaseHTTPRequestHandler):
    """/file: honours Range; /norange: ignores it; /drop: cuts the body half-way; else 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        state["ranges"].append(self.headers.get("Range"))
        if self.path == "/norange":
            return self._send(200, PAYLOAD)
        if self.path not in ("/file", "/drop"):
            return self.send_error(404)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        if start >= len(PAYLOAD) and match:
            return self._send(416, b"", {"Content-Range": f"bytes */{len(PAYLOAD)}"})
        status = 206 if match else 200
        extra = {"Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"} if match else {}
        body = PAYLOAD[start:]
        if self.path == "/drop" and state["drops"] > 0:
            state["drops"] -= 1
            self._send(status, body, extra, cut=len(body) // 2)
            return
        self._send(status, body, extra)

    def _send(self, status: int, body: bytes, headers: dict | None = None, cut: int | None = None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = {"ranges": [], "drops": 0}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def base(server) -> str:
    server.state.update(ranges=[], drops=0)
    return f"http://127.0.0.1:{server.server_address[1]}"


def fetch(out: Path, url: str, **kwargs):
    return download(out, url, chunk_size=CHUNK, timeout=5, **kwargs)


def test_full_download_reports_size_sha_and_progress(tmp_path, base):
    seen: list[tuple[int, int | None]] = []
    out = tmp_path / "sub" / "pets.zip"
    result = fetch(out, f"{base}/file", progress=lambda d, t: seen.append((d, t)))
    assert (result.path, result.size, result.sha256, result.resumed) == (out, len(PAYLOAD), SHA, False)
    assert out.read_bytes() == PAYLOAD and not part_path(out).exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_resumes_part_with_range_request(tmp_path, base, server):
    out = tmp_path / "pets.zip"
    part_path(out).write_bytes(PAYLOAD[:50_000])
    result = fetch(out, f"{base}/file", expected_sha256=SHA, expected_size=len(PAYLOAD))
    assert result.resumed and result.sha256 == SHA and out.read_bytes() == PAYLOAD
    assert server.state["ranges"] == ["bytes=50000-"]


def test_server_ignoring_range_restarts_from_zero(tmp_path, base):
    out = tmp_path / "pets.zip"
    part_path(out).write_bytes(b"stale bytes that must not survive")
    result = fetch(out, f"{base}/norange")
    assert not result.resumed and result.sha256 == SHA and out.read_bytes() == PAYLOAD


def test_dropped_connection_keeps_part_and_next_call_resumes(tmp_path, base, server):
    out = tmp_path / "pets.zip"
    server.state["drops"] = 1
    with pytest.raises(CatsdogsError, match="interrupted after .* run the same command again") as err:
        fetch(out, f"{base}/drop", retries=0)
    assert "\n" not in str(err.value) and not out.exists()
    assert 0 < part_path(out).stat().st_size < len(PAYLOAD)
    result = fetch(out, f"{base}/drop")
    assert result.resumed and result.sha256 == SHA and out.read_bytes() == PAYLOAD


def test_dropped_connection_is_resumed_within_one_call(tmp_path, base, server):
    server.state["drops"] = 1
    result = fetch(tmp_path / "pets.zip", f"{base}/drop", retries=1)
    assert result.resumed and result.sha256 == SHA
    assert server.state["ranges"][0] is None and server.state["ranges"][1].startswith("bytes=")


def test_416_on_complete_part_finishes_without_download(tmp_path, base):
    out = tmp_path / "pets.zip"
    part_path(out).write_bytes(PAYLOAD)
    result = fetch(out, f"{base}/file")
    assert result.resumed and result.sha256 == SHA and out.read_bytes() == PAYLOAD


def test_416_on_oversized_part_restarts(tmp_path, base, server):
    out = tmp_path / "pets.zip"
    part_path(out).write_bytes(PAYLOAD + b"junk")
    result = fetch(out, f"{base}/file")
    assert not result.resumed and result.sha256 == SHA and out.read_bytes() == PAYLOAD
    assert server.state["ranges"] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_http_404_is_one_line_with_alternative(tmp_path, base):
    out = tmp_path / "pets.zip"
    with pytest.raises(CatsdogsError, match="HTTP 404") as err:
        fetch(out, f"{base}/missing")
    message = str(err.value)
    assert "\n" not in message and "train.zip" in message and not isinstance(err.value, UsageError)
    assert not out.exists() and not part_path(out).exists()


def test_refused_connection_says_network_unreachable(tmp_path):
    with socket.socket() as sock:  # bound but not listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(CatsdogsError, match="network is unreachable") as err:
            fetch(tmp_path / "pets.zip", f"http://127.0.0.1:{port}/x.zip")
    message = str(err.value)
    assert "\n" not in message and "connection refused" in message and "train.zip" in message


def test_file_url_copies_and_resumes(tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(PAYLOAD)
    out = tmp_path / "out.zip"
    assert fetch(out, src.as_uri()).sha256 == SHA
    out2 = tmp_path / "out2.zip"
    part_path(out2).write_bytes(PAYLOAD[:1234])
    result = fetch(out2, src.as_uri())
    assert result.resumed and out2.read_bytes() == PAYLOAD
    with pytest.raises(UsageError, match="no such file"):
        fetch(tmp_path / "x.zip", (tmp_path / "nope.zip").as_uri())


def test_existing_out_needs_overwrite(tmp_path, base):
    out = tmp_path / "pets.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="already exists"):
        fetch(out, f"{base}/file")
    assert out.read_bytes() == b"keep me"
    assert fetch(out, f"{base}/file", overwrite=True).sha256 == SHA
    with pytest.raises(UsageError, match="is a folder"):
        fetch(tmp_path, f"{base}/file")


def test_checksum_mismatch_deletes_everything(tmp_path, base):
    out = tmp_path / "pets.zip"
    with pytest.raises(CatsdogsError, match="does not match: sha256"):
        fetch(out, f"{base}/file", expected_sha256="0" * 64)
    assert not out.exists() and not part_path(out).exists()


def test_size_mismatch_is_caught_before_downloading(tmp_path, base):
    out = tmp_path / "pets.zip"
    with pytest.raises(CatsdogsError, match="not the expected 5"):
        fetch(out, f"{base}/file", expected_size=5)
    assert not out.exists()


def test_url_from_environment_and_default(tmp_path, base, monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert resolve_url() == DEFAULT_URL and resolve_url("http://x/y") == "http://x/y"
    monkeypatch.setenv(URL_ENV, f"{base}/file")
    assert download(tmp_path / "pets.zip", timeout=5).sha256 == SHA
    with pytest.raises(UsageError, match="only http"):
        download(tmp_path / "other.zip", "ftp://example.invalid/x.zip")


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/x.zip", "http://example.com:port/x.zip",
                                 "ftp://example.com/x.zip"])
def test_malformed_url_is_a_usage_error_naming_url(tmp_path, capsys, url):
    from catsdogs.cli import main

    with pytest.raises(UsageError, match="cannot download") as error:
        download(tmp_path / "x.zip", url)
    assert error.value.parameter == "url" and "\n" not in str(error.value)
    assert main(["download", "--url", url, "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot download --url" in err and "ValueError" not in err, err
    assert not list(tmp_path.iterdir())
