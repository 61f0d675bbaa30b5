"""Fetch Microsoft's PetImages archive, resumably, with a sha256 of what was fetched.

The archive is streamed to ``OUT.part``; a later call resumes that file with an HTTP ``Range``
request and renames it to ``OUT`` (atomically) only once it is complete and matches
``expected_size`` / ``expected_sha256`` when given.

Decisions:
- An interrupted transfer keeps ``OUT.part`` (that is what resuming needs); ``OUT`` never holds a
  partial file.
- A complete file that does not match ``expected_size``/``expected_sha256`` is deleted (``.part``
  included): resuming from it could never succeed, and keeping it would mislead.
- Only the standard library (``urllib``) is used; ``file://`` URLs are copied the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from catsdogs.errors import CatsdogsError, UsageError

DEFAULT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip"
)
URL_ENV = "CATSDOGS_PETIMAGES_URL"
USER_AGENT = "catsdogs-download/1"
OTHERWISE = (
    "get the data otherwise: download Kaggle's dogs-vs-cats train.zip "
    "(https://www.kaggle.com/c/dogs-vs-cats/data) or use any folder of images, "
    "and pass it as SOURCE to `catsdogs prepare`"
)

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class DownloadResult:
    """What ended up on disk: the complete file, its size and sha256, and whether it resumed."""

    path: Path
    size: int
    sha256: str
    resumed: bool


class _Interrupted(Exception):
    """The transfer stopped early; ``.part`` holds what arrived."""

    def __init__(self, done: int, total: int | None, reason: str) -> None:
        super().__init__(reason)
        self.done, self.total, self.reason = done, total, reason


class _Restart(Exception):
    """The server cannot continue the ``.part``: fetch from byte 0."""


def resolve_url(url: str | None = None) -> str:
    """The URL to fetch: the argument, else ``$CATSDOGS_PETIMAGES_URL``, else Microsoft's; a UsageError naming
    `url` when it is malformed (an unclosed IPv6 bracket, a port that is not a number) or not http(s)/file."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 -- parsed lazily: a bad port raises only here
    except ValueError as error:
        raise UsageError(f"cannot download url {url!r}: not a valid URL ({error})", "url") from None
    if parsed.scheme.lower() not in ("http", "https", "file"):
        raise UsageError(f"cannot download url {url!r}: only http://, https:// and file:// URLs work", "url")
    return url


def part_path(out: Path) -> Path:
    """Where the download in progress lives: ``OUT.part``."""
    return out.with_name(out.name + ".part")


def download(
    out: Path,
    url: str | None = None,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    overwrite: bool = False,
    chunk_size: int = 1 << 20,
    progress: Progress | None = None,
    timeout: float = 30,
    retries: int = 2,
) -> DownloadResult:
    """Download ``url`` to ``out`` (resuming ``out.part``), verify it, and return what was written.

    ``progress(done, total)`` is called after each chunk (``total`` is None when unknown).
    ``retries`` is how many times an interrupted transfer is resumed within this call.
    Raises ``UsageError`` for an existing ``out`` (unless ``overwrite``) or a bad URL/file, and
    ``CatsdogsError`` for network failures, interruptions and checksum/size mismatches.
    """
    out = Path(out)
    url = resolve_url(url)
    _check_out(out, overwrite)
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
    scheme = urlparse(url).scheme.lower()
    part = part_path(out)
    fetch = _fetch_file if scheme == "file" else _fetch_http
    resumed = False
    for attempt in range(retries + 1):
        try:
            size, digest, again = fetch(url, part, expected_size, chunk_size, progress, timeout)
            resumed = resumed or again
            break
        except _Interrupted as exc:
            if attempt == retries:
                of = f" of {exc.total}" if exc.total is not None else ""
                raise CatsdogsError(
                    f"download of {url} interrupted after {exc.done}{of} bytes ({exc.reason}); "
                    f"the partial file {part} is kept: run the same command again to resume"
                ) from None
    _verify(part, size, digest, expected_size, expected_sha256)
    os.replace(part, out)
    return DownloadResult(path=out, size=size, sha256=digest, resumed=resumed)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise UsageError(f"out {out} is a folder; give a file name such as {out / 'PetImages.zip'}", "out")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; remove it or pass overwrite=True", "overwrite")


def _verify(
    part: Path, size: int, digest: str, expected_size: int | None, expected_sha256: str | None
) -> None:
    problems = []
    if expected_size is not None and size != expected_size:
        problems.append(f"size {size} instead of {expected_size}")
    if expected_sha256 is not None and digest != expected_sha256:
        problems.append(f"sha256 {digest} instead of {expected_sha256}")
    if problems:
        part.unlink(missing_ok=True)
        raise CatsdogsError(
            f"downloaded file does not match: {', '.join(problems)}; it was deleted"
        )


def _hash_existing(part: Path, chunk_size: int) -> tuple[int, hashlib._Hash]:
    """Size and running sha256 of the ``.part`` already on disk (0 and empty when none)."""
    hasher = hashlib.sha256()
    if not part.is_file():
        return 0, hasher
    done = 0
    with open(part, "rb") as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            done += len(chunk)
    return done, hasher


def _copy_stream(
    read: Callable[[int], bytes],
    part: Path,
    mode: str,
    done: int,
    total: int | None,
    hasher: hashlib._Hash,
    chunk_size: int,
    progress: Progress | None,
) -> int:
    """Append ``read`` chunks to ``part`` while hashing; raise ``_Interrupted`` when short."""
    if progress:
        progress(done, total)
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, mode) as f:
        try:
            while chunk := read(chunk_size):
                f.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except (OSError, http.client.HTTPException) as exc:
            raise _Interrupted(done, total, _reason(exc)) from None
    if total is not None and done < total:
        raise _Interrupted(done, total, "connection closed early")
    return done


def _fetch_file(
    url: str,
    part: Path,
    expected_size: int | None,
    chunk_size: int,
    progress: Progress | None,
    timeout: float,
) -> tuple[int, str, bool]:
    """Copy a ``file://`` URL into ``part``, continuing an existing ``part``."""
    src = Path(url2pathname(urlparse(url).path))
    if not src.is_file():
        raise UsageError(f"cannot download {url}: no such file {src}")
    total = src.stat().st_size
    _check_total(total, expected_size, url)
    done, hasher = _hash_existing(part, chunk_size)
    if done > total:
        part.unlink()
        done, hasher = 0, hashlib.sha256()
    with open(src, "rb") as f:
        f.seek(done)
        size = _copy_stream(f.read, part, "ab" if done else "wb", done, total, hasher,
                            chunk_size, progress)
    return size, hasher.hexdigest(), done > 0


def _fetch_http(
    url: str,
    part: Path,
    expected_size: int | None,
    chunk_size: int,
    progress: Progress | None,
    timeout: float,
) -> tuple[int, str, bool]:
    """Fetch over HTTP(S), resuming ``part`` with a Range request when the server allows it."""
    try:
        return _http_once(url, part, expected_size, chunk_size, progress, timeout, resume=True)
    except _Restart:
        part.unlink(missing_ok=True)
        return _http_once(url, part, expected_size, chunk_size, progress, timeout, resume=False)


def _http_once(
    url: str,
    part: Path,
    expected_size: int | None,
    chunk_size: int,
    progress: Progress | None,
    timeout: float,
    *,
    resume: bool,
) -> tuple[int, str, bool]:
    done, hasher = _hash_existing(part, chunk_size) if resume else (0, hashlib.sha256())
    if expected_size is not None and done > expected_size:
        raise _Restart
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if done:
        headers["Range"] = f"bytes={done}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and done:
            total = _content_range(exc.headers.get("Content-Range"))[2]
            if total == done or (total is None and expected_size == done):
                if progress:
                    progress(done, done)
                return done, hasher.hexdigest(), True
            raise _Restart from None
        raise _network_error(url, exc, part) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(url, exc, part) from None
    with response:
        if done and response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != done:
                raise _Restart
            mode, resumed = "ab", True
        else:  # 200: a full body (a server that ignores Range restarts us from byte 0)
            done, hasher, mode, resumed = 0, hashlib.sha256(), "wb", False
            total = _int_or_none(response.headers.get("Content-Length"))
        _check_total(total, expected_size, url)
        size = _copy_stream(response.read, part, mode, done, total, hasher, chunk_size, progress)
    return size, hasher.hexdigest(), resumed


def _check_total(total: int | None, expected_size: int | None, url: str) -> None:
    if total is not None and expected_size is not None and total != expected_size:
        raise CatsdogsError(
            f"{url} is {total} bytes, not the expected {expected_size}: wrong file or URL"
        )


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``(first, last, total)`` of a Content-Range header; None for what it does not say."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None, None, None
    first, last, total = match.groups()
    return _int_or_none(first), _int_or_none(last), _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    """A short one-line description of a network exception."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}".rstrip()
    inner = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, socket.gaierror):
        return "host name could not be resolved"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    text = str(inner if isinstance(exc, urllib.error.URLError) else exc) or type(exc).__name__
    return " ".join(text.split())


def _network_error(url: str, exc: BaseException, part: Path) -> CatsdogsError:
    """One line: why the server could not be reached, and how to get the data otherwise."""
    if isinstance(exc, urllib.error.HTTPError):
        what = f"cannot download {url}: {_reason(exc)}"
    else:
        what = f"cannot download {url}: the network is unreachable ({_reason(exc)})"
    kept = f"; the partial file {part} is kept for a later resume" if part.exists() else ""
    return CatsdogsError(f"{what}{kept}; {OTHERWISE}")
