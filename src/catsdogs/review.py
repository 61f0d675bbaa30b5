"""`catsdogs review DATA|RUN`: a local page to fix the data, one finding at a time (FastAPI, run by uvicorn).

The queue, best first: the audit's label issues, near-duplicate pairs (side by side), outliers; for a RUN, the
test photos it gets most wrong and those it is least sure of, and those it calls `unknown`; with `unlabeled`,
the unlabeled photos most worth labelling (`catsdogs.unlabeled`). Each decision is written at once, atomically:
relabel/exclude to the corrections file (`catsdogs.corrections`, which `prepare` applies), labels of unlabeled
photos to a `path,label` CSV (a labels CSV `prepare` reads), and the decision itself to a state file beside the
corrections file (`<name>.review.json`): a reload or a restart continues where it stopped, and `undo` works
across them. The photos themselves are never moved or changed; images are served only by their index in the
queue's list of files (no path ever comes from the browser).

Endpoints: `GET /` (the page), `GET /api/state`, `GET /api/image/{n}`, `POST /api/decision`, `POST /api/undo`.
POSTs need the header `X-Review: 1` (a page of another site cannot send it without the server's consent).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import mimetypes
import os
import shlex
from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel

from catsdogs.auditing import Issue, read_issues
from catsdogs.corrections import Correction, read_corrections, write_corrections
from catsdogs.data_files import read_classes, read_record
from catsdogs.errors import UsageError
from catsdogs.files import write_text_atomic
from catsdogs.images import MAX_FILE_BYTES, ImageError, read_photo_bytes
from catsdogs.review_queue import KIND_TITLES, Item, Queue, build_queue, class_keys
from catsdogs.run_files import FIT_RECORD, read_config

logger = logging.getLogger(__name__)

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# ---- decisions --------------------------------------------------------------------------------------

class Review:
    """The queue and the decisions on it; every change written at once, atomically."""

    def __init__(self, queue: Queue, corrections: Path, labeled: Path | None = None) -> None:
        self.queue = queue
        self.corrections_path = Path(corrections)
        self.labeled_path = Path(labeled) if labeled is not None else None
        self.state_path = self.corrections_path.with_name(self.corrections_path.name + ".review.json")
        self.items = {item.id: item for item in queue.items}
        self.corrections: dict[str, tuple[str, str]] = {}
        if self.corrections_path.exists():
            self.corrections = {c.source: (c.action, c.label) for c in read_corrections(self.corrections_path)}
        self.labels: dict[str, str] = _read_labeled(self.labeled_path) if self.labeled_path else {}
        self.history: list[dict] = []
        if self.state_path.exists():
            try:
                self.history = list(json.loads(self.state_path.read_text(encoding="utf-8")).get("history", []))
            except (ValueError, AttributeError):
                raise UsageError(f"{self.state_path}: not a review state file; move it away to start over",
                                 "corrections") from None

    def state(self) -> dict:
        """What the page needs: the classes and their keys, the queue, and the decision on each item."""
        return {"classes": self.queue.classes, "keys": class_keys(self.queue.classes),
                "items": [asdict(item) | {"title": KIND_TITLES[item.kind]} for item in self.queue.items],
                "decisions": self.decisions(), "corrections": str(self.corrections_path),
                "labeled": str(self.labeled_path) if self.labeled_path else None}

    def decisions(self) -> dict[str, str]:
        return {entry["item"]: entry["action"] for entry in self.history}

    def decide(self, item_id: str, action: str, label: str = "", keep: int | None = None) -> dict:
        """Apply one decision (relabel, exclude, keep, keep_one) to an item; returns the new decisions."""
        item = self.items.get(item_id)
        if item is None:
            raise UsageError(f"no item {item_id[:80]!r} in the queue", "item")
        previous = next((e for e in self.history if e["item"] == item_id), None)
        if previous is not None:  # deciding again replaces the earlier decision on this item
            self._apply(previous["changes"], "before")
        try:
            changes = self._changes(item, action, label, keep)
        except UsageError:
            if previous is not None:
                self._apply(previous["changes"], "after")
            raise
        self._apply(changes, "after")
        summary = f"{action} {label}".strip() if action == "relabel" else (
            f"keep_one {keep}" if action == "keep_one" else action)
        self.history = [e for e in self.history if e is not previous] + [
            {"item": item_id, "action": summary, "changes": changes}]
        self._save()
        return self.decisions()

    def undo(self) -> str | None:
        """Undo the last decision (restoring what it replaced); returns its item id, or None."""
        if not self.history:
            return None
        entry = self.history.pop()
        self._apply(entry["changes"], "before")
        self._save()
        return entry["item"]

    def _changes(self, item: Item, action: str, label: str, keep: int | None) -> list[dict]:
        if item.kind == "unlabeled":
            if action == "relabel" and label not in self.queue.classes:
                raise UsageError(f"label {label[:40]!r} is not a class", "label")
            path = item.photos[0].path
            after = label if action == "relabel" else None
            return [{"file": "labeled", "key": path, "before": self.labels.get(path), "after": after}]
        if action == "relabel":
            if label not in self.queue.classes or len(item.photos) != 1:
                raise UsageError(f"relabel needs one photo and a class, got {label[:40]!r}", "label")
            photo = item.photos[0]
            wanted = None if label == photo.label else ["relabel", label]
            targets = [(photo, wanted)]
        elif action == "exclude":
            targets = [(photo, ["exclude", ""]) for photo in item.photos]
        elif action == "keep_one":
            if keep not in range(len(item.photos)) or len(item.photos) < 2:
                raise UsageError("keep_one needs keep = the index of the photo to keep", "keep")
            targets = [(photo, ["exclude", ""]) for i, photo in enumerate(item.photos) if i != keep]
        elif action == "keep":
            targets = []
        else:
            raise UsageError(f"unknown action {action[:40]!r} (relabel, exclude, keep, keep_one)", "action")
        return [{"file": "corrections", "key": photo.source, "before": _listed(self.corrections.get(photo.source)),
                 "after": after} for photo, after in targets]

    def _apply(self, changes: list[dict], side: str) -> None:
        for change in changes:
            table = self.labels if change["file"] == "labeled" else self.corrections
            value = change[side]
            if value is None:
                table.pop(change["key"], None)
            else:
                table[change["key"]] = value if change["file"] == "labeled" else tuple(value)

    def _save(self) -> None:
        """The corrections (and labels), then the decisions: each file replaced atomically."""
        self.corrections_path.parent.mkdir(parents=True, exist_ok=True)
        write_corrections(self.corrections_path, [Correction(source, action, label)
                                                  for source, (action, label) in sorted(self.corrections.items())])
        if self.labeled_path is not None:
            _write_labeled(self.labeled_path, self.labels)
        write_text_atomic(self.state_path, json.dumps({"history": self.history}, indent=1) + "\n")

    def image(self, index: int) -> tuple[bytes, str]:
        """The bytes and media type of the queue's file number `index` (read inside its folder only)."""
        if not 0 <= index < len(self.queue.files):
            raise KeyError(index)
        path = self.queue.files[index]
        root = next((r for r in self.queue.roots if _inside(path, r)), None)
        if root is None:
            raise KeyError(index)
        data = read_photo_bytes(path, MAX_FILE_BYTES, root, "its folder")
        return data, mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _listed(value) -> list | None:
    return list(value) if value is not None else None


def _inside(path: Path, root: Path) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.commonpath([path, root]) == root


def _read_labeled(path: Path) -> dict[str, str]:
    """path -> label of a labels CSV written by review (absolute paths, or relative to its folder)."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    labels = {}
    for row in rows:
        given = Path(row.get("path") or "")
        labels[str(given if given.is_absolute() else (path.parent / given).resolve())] = row.get("label") or ""
    return labels


def _write_labeled(path: Path, labels: dict[str, str]) -> None:
    """`path,label`: relative to the CSV's folder when inside it, else absolute (prepare then needs
    allow_outside=True)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    folder = path.parent.resolve()
    for photo, label in sorted(labels.items()):
        full = Path(photo).resolve()
        writer.writerow([full.relative_to(folder).as_posix() if _inside(full, folder) else str(full), label])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buffer.getvalue())


# ---- DATA or RUN -> a Review --------------------------------------------------------------------------

def find_issues(data_dir: Path, run: Path | None, **audit_options) -> list[Issue]:
    """The audit's issues: RUN/audit/issues.csv, or DATA/../audit/issues.csv when present; else the audit is
    run (into RUN/audit, or DATA/../audit when that folder does not exist yet)."""
    audit_dir = run / "audit" if run is not None else data_dir.resolve().parent / "audit"
    if (audit_dir / "issues.csv").is_file():
        return read_issues(audit_dir / "issues.csv")
    from catsdogs.auditing import audit

    out = audit_dir if not audit_dir.exists() or run is not None else None
    options = {"cache_dir": run / "cache"} if run is not None else {}
    logger.info("no audit found: auditing %s", data_dir)
    return audit(data_dir, out, **(options | audit_options), html=out is not None).issues


def _run_and_data(target: Path) -> tuple[Path | None, Path]:
    """(the RUN, its DATA as config.json names it) for a RUN; (None, TARGET) for a DATA."""
    if (target / "config.json").is_file():
        return target, Path(str(read_config(target).get("data") or ""))
    return None, target


def apply_command(target: str | Path, corrections: str | Path) -> str:
    """The command that applies the decisions in `corrections`: a `fit` RUN (its photos prepared inside it) is
    fitted again with them, its cache kept; a DATA, or another RUN's DATA, is prepared again from its SOURCE."""
    run, data_dir = _run_and_data(Path(target))
    source = (read_record(data_dir) or {}).get("source")
    source = shlex.quote(str(source)) if isinstance(source, str) and source else "SOURCE"
    tail = f"--corrections {shlex.quote(str(corrections))} --overwrite"
    if run is not None and (run / FIT_RECORD).is_file() and data_dir.resolve() == (run / "data").resolve():
        return f"catsdogs fit {source} --out {shlex.quote(str(run))} {tail}"
    return f"catsdogs prepare {source} --out {shlex.quote(str(data_dir))} {tail}"


def open_review(target: str | Path, *, corrections: str | Path | None = None, unlabeled: str | Path | None = None,
                labeled: str | Path | None = None, issues: list[Issue] | None = None, predictor=None,
                **audit_options) -> Review:
    """A Review of a prepared DATA or of a RUN (its DATA, its audit, its test predictions). `corrections`
    defaults to DATA/corrections.csv (RUN/corrections.csv); `unlabeled` (a RUN only) adds the photos of that
    folder most worth labelling, their labels going to `labeled` (default RUN/labeled.csv). `issues`: the
    audit's rows (default: `find_issues`); `predictor`: the RUN's Predictor (default: loaded)."""
    target = Path(target)
    if not target.exists():
        raise UsageError(f"{target}: no such folder", "target")
    run, data_dir = _run_and_data(target)
    if run is not None and not (data_dir / "manifest.csv").is_file():
        raise UsageError(f"{run}: its DATA {data_dir} is gone; review that DATA's copy instead", "target")
    read_classes(data_dir)  # a one-line error when it is not a prepared DATA
    if unlabeled is not None and run is None:
        raise UsageError("unlabeled needs a RUN (its model ranks the photos), not a DATA", "unlabeled")
    if issues is None:
        issues = find_issues(data_dir, run, **audit_options)
    predictions = _read_csv(run / "predictions-test.csv") if run is not None else []
    ranked, root = None, None
    if unlabeled is not None:
        from catsdogs.unlabeled import rank_folder

        root = Path(unlabeled)
        ranked = rank_folder(run, root, predictor=predictor)
    queue = build_queue(data_dir, issues, predictions=predictions, unlabeled=ranked, unlabeled_root=root)
    corrections = Path(corrections) if corrections is not None else (run or data_dir) / "corrections.csv"
    if unlabeled is not None:
        labeled = Path(labeled) if labeled is not None else run / "labeled.csv"
    return Review(queue, corrections, labeled if unlabeled is not None else None)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- the web app ------------------------------------------------------------------------------------

class Decision(BaseModel):
    """One decision, as the page POSTs it."""

    item: str
    action: str  # relabel, exclude, keep, keep_one
    label: str = ""
    keep: int | None = None  # keep_one: the index of the photo kept


def create_app(review: Review):
    """The FastAPI app of a Review."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from catsdogs.errors import CatsdogsError

    app = FastAPI(title="catsdogs review", docs_url=None, redoc_url=None)
    page = _page_html()

    @app.middleware("http")
    async def headers(request: Request, call_next):
        if request.method == "POST" and request.headers.get("x-review") != "1":
            response = JSONResponse({"error": "missing X-Review header"}, status_code=403)
        else:
            response = await call_next(request)
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(CatsdogsError)
    async def usage(_request: Request, error: CatsdogsError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/state")
    def state() -> dict:
        return review.state()

    @app.get("/api/image/{index}")
    def image(index: int) -> Response:
        try:
            data, media = review.image(index)
        except (KeyError, ImageError):
            return JSONResponse({"error": "no such image"}, status_code=404)
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/decision")
    def decision(body: Decision) -> dict:
        return {"decisions": review.decide(body.item, body.action, body.label, body.keep)}

    @app.post("/api/undo")
    def undo() -> dict:
        return {"item": review.undo(), "decisions": review.decisions()}

    return app


def _page_html() -> str:
    from importlib import resources

    return resources.files("catsdogs").joinpath("static", "review.html").read_text(encoding="utf-8")


def serve_review(review: Review, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the review page until interrupted (a UsageError when host:port cannot be listened on)."""
    from catsdogs.serve import listen, serve_forever

    serve_forever(create_app(review), listen(host, port))


__all__ = ["Review", "build_queue", "create_app", "open_review", "serve_review", "class_keys"]
