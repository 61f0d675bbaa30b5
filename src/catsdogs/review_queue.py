"""The queue of `catsdogs review`, best first: the audit's label issues, near-duplicate pairs, outliers; a RUN's
test photos called `unknown`, most wrong and least sure; unlabeled photos worth labelling. Each photo is an index
into the queue's list of files: the only files the review page serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from catsdogs.auditing import Issue
from catsdogs.data_files import read_classes, read_manifest

RUN_SHOWN = 50  # most wrong, and least sure, test photos of a RUN
KIND_TITLES = {"label": "likely wrong label", "near_duplicate": "near-duplicate pair", "outlier": "outlier",
               "wrong": "the model gets it wrong", "unsure": "the model is unsure", "unknown": "the model calls it unknown",
               "unlabeled": "worth labelling"}


@dataclass
class Photo:
    image: int  # index in Review.files
    path: str  # inside DATA (or the unlabeled photo's path)
    source: str  # manifest.csv's `source` (empty for unlabeled photos)
    label: str
    split: str


@dataclass
class Item:
    id: str
    kind: str
    photos: list[Photo]
    suggested: str = ""
    why: str = ""
    score: float = 0.0


@dataclass
class Queue:
    classes: list[str]
    items: list[Item]
    files: list[Path]  # the only files the image endpoint serves
    data_dir: Path
    roots: list[Path] = field(default_factory=list)  # folders the files must lie in (after symlinks)


def class_keys(classes: list[str]) -> dict[str, str]:
    """Key -> class: 1-9, 0, then letters (not x or u: exclude and undo)."""
    keys = [*"1234567890", *(c for c in "abcdefghijklmnopqrstvwyz")]
    return dict(zip(keys, classes))


# ---- the queue ------------------------------------------------------------------------------------

class _Files:
    def __init__(self) -> None:
        self.files: list[Path] = []
        self.index: dict[Path, int] = {}

    def add(self, path: Path) -> int:
        if path not in self.index:
            self.index[path] = len(self.files)
            self.files.append(path)
        return self.index[path]


def build_queue(data_dir: Path, issues: list[Issue], *, predictions: list[dict[str, str]] | None = None,
                unlabeled: list[tuple[Path, dict[str, float], str]] | None = None,
                unlabeled_root: Path | None = None) -> Queue:
    """The review queue of a DATA: `issues` (AUDIT/issues.csv's rows), then a RUN's `predictions` (rows of
    predictions-test.csv), then `unlabeled` ((path, probabilities, why), best first). Photos not in DATA's
    manifest are left out."""
    data_dir = Path(data_dir)
    classes = read_classes(data_dir)
    rows = {row["path"]: row for row in read_manifest(data_dir)}
    files = _Files()

    def photo(path: str) -> Photo | None:
        row = rows.get(path)
        if row is None:
            return None
        return Photo(files.add(data_dir / path), path, row["source"], row["class"], row["split"])

    items: list[Item] = []
    for kind in ("label", "near_duplicate", "outlier"):
        for issue in (i for i in issues if i.kind == kind):
            if kind == "near_duplicate":
                pair = [photo(issue.detail), photo(issue.path)]
                if all(pair):
                    where = "across splits: the model is tested on a photo it trained on" if \
                        pair[0].split != pair[1].split else "in one split"
                    items.append(Item(f"near_duplicate:{issue.detail}|{issue.path}", kind, pair,
                                      why=f"similarity {issue.score:.3f}, {where}", score=issue.score))
                continue
            one = photo(issue.path)
            if one is None:
                continue
            if kind == "label":
                sure = "cleanlab: confident" if issue.confident is not False else "out-voted, less certain"
                items.append(Item(f"label:{issue.path}", kind, [one], issue.detail,
                                  f"p(label) {1 - issue.score:.2f}; {sure}", issue.score))
            else:
                items.append(Item(f"outlier:{issue.path}", kind, [one], why=issue.detail, score=issue.score))
    items += _prediction_items(predictions or [], rows, classes, photo)
    for path, probabilities, why in unlabeled or []:
        best = max(probabilities, key=probabilities.get) if probabilities else ""
        items.append(Item(f"unlabeled:{path}", "unlabeled",
                          [Photo(files.add(Path(path)), str(path), "", "", "")], best, why))
    roots = [data_dir] + ([Path(unlabeled_root)] if unlabeled_root is not None else [])
    return Queue(classes, items, files.files, data_dir, roots)


def _prediction_items(predictions, rows, classes, photo) -> list[Item]:
    """A RUN's test photos: called `unknown`, then the most wrong (lowest p(true) first), then the least sure
    of the right ones (lowest top probability first); RUN_SHOWN of each."""
    by_suffix = {"/".join(path.split("/")[-3:]): path for path in rows}
    scored = []
    for row in predictions:
        path = by_suffix.get("/".join(str(row.get("path", "")).replace("\\", "/").split("/")[-3:]))
        true, label = row.get("true_label", ""), row.get("label", "")
        p = {name: _number(row.get(f"p_{name}")) for name in classes}
        if path is None or true not in classes or any(v is None for v in p.values()):
            continue
        scored.append((path, true, label, p))
    unknown = [Item(f"unknown:{path}", "unknown", [photo(path)], max(p, key=p.get),
                    f"unlike the training photos (most probable {max(p, key=p.get)} {max(p.values()):.2f})")
               for path, true, label, p in scored if label == "unknown"]
    known = [s for s in scored if s[2] != "unknown"]
    wrong = sorted((s for s in known if s[2] != s[1]), key=lambda s: s[3][s[1]])[:RUN_SHOWN]
    right = sorted((s for s in known if s[2] == s[1]), key=lambda s: max(s[3].values()))[:RUN_SHOWN]
    items = unknown
    items += [Item(f"wrong:{path}", "wrong", [photo(path)], label, f"predicted {label}, p({true}) {p[true]:.2f}",
                   1 - p[true]) for path, true, label, p in wrong]
    items += [Item(f"unsure:{path}", "unsure", [photo(path)], label, f"right, but only p {max(p.values()):.2f}",
                   1 - max(p.values())) for path, true, label, p in right]
    return items


def _number(text) -> float | None:
    try:
        value = float(str(text).lstrip("'"))
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None
