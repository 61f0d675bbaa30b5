"""`catsdogs fit` with default options on photo sets assembled from the shared Kaggle sample, then `catsdogs
predict` on separate held-out photos (never seen by fit: not in its train, validation or test split).

    python benchmarks/fit_own_photos.py [--zip ../shared/data/dogs-vs-cats-train-5000.zip] [--work DIR]

Sets (the only real photos here are Kaggle's cats and dogs):
- `pets-presplit`: 2 classes in a pre-split tree with the ants/bees tutorial's sizes (train 123 + 122,
  val 77 + 76; no test/, so fit carves one from train); held out: 500 other photos of each class.
- `orientation`: 4 classes in class folders, the same photos turned upright / left / down / right (a real
  task: which way is up), 150 photos per class; held out: 100 other photos per class.

The held-out accuracy is that of predict's `label` column, as a user reads it: a photo labelled `unknown` (unlike
the training photos, docs/open_set.md) counts as wrong; the share labelled unknown, the accuracy on the accepted
photos and that of the most probable class are printed beside it.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ROTATIONS = {"up": None, "left": Image.Transpose.ROTATE_90, "down": Image.Transpose.ROTATE_180,
             "right": Image.Transpose.ROTATE_270}


def write(archive: zipfile.ZipFile, name: str, target: Path, rotation=None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if rotation is None:
        target.write_bytes(archive.read(name))
    else:
        Image.open(io.BytesIO(archive.read(name))).convert("RGB").transpose(rotation).save(target, quality=95)


def pets_presplit(archive: zipfile.ZipFile, root: Path) -> tuple[Path, Path]:
    source, held_out = root / "source", root / "held-out"
    sizes = {"cat": (123, 77), "dog": (122, 76)}
    for name, (train, val) in sizes.items():
        for i in range(train + val):  # numbers spread over the sample: originals and 200x200 copies alike
            split = "train" if i < train else "val"
            number = i * 9
            write(archive, f"train/{name}.{number}.jpg", source / split / name / f"{name}.{number}.jpg")
        for number in [n for n in range(2500) if n % 9][::4][:500]:  # none of the numbers fit sees
            write(archive, f"train/{name}.{number}.jpg", held_out / name / f"{name}.{number}.jpg")
    return source, held_out


def orientation(archive: zipfile.ZipFile, root: Path) -> tuple[Path, Path]:
    source, held_out = root / "source", root / "held-out"
    for k, (label, rotation) in enumerate(ROTATIONS.items()):
        for i in range(150):  # each class its own photos (no photo in two classes)
            name = f"train/{'cat' if i % 2 else 'dog'}.{(i * 4 + k) * 3}.jpg"
            write(archive, name, source / label / Path(name).name, rotation)
        for i in range(100):
            name = f"train/{'cat' if i % 2 else 'dog'}.{(i * 4 + k) * 3 + 1}.jpg"
            write(archive, name, held_out / label / Path(name).name, rotation)
    return source, held_out


def catsdogs(*args: str) -> str:
    command = [sys.executable, "-m", "catsdogs.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return result.stdout


def held_out_scores(predictions_csv: str) -> dict:
    """Accuracy of the `label` column (an `unknown` counts as wrong), per class; the share labelled `unknown`; the
    accuracy of the most probable class (`unknown` set aside) and on the photos accepted."""
    rows = list(csv.DictReader(io.StringIO(predictions_csv)))
    classes = [column[2:] for column in rows[0] if column.startswith("p_")]
    truth = [Path(row["path"]).parent.name for row in rows]
    likeliest = [max(classes, key=lambda name: float(row[f"p_{name}"])) for row in rows]
    right = Counter(row["label"] == true for row, true in zip(rows, truth))
    per_class: dict[str, list[bool]] = {}
    for row, true in zip(rows, truth):
        per_class.setdefault(true, []).append(row["label"] == true)
    accepted = [row["label"] == true for row, true in zip(rows, truth) if row["label"] != "unknown"]
    return {"accuracy": right[True] / len(rows), "per_class": {k: sum(v) / len(v) for k, v in sorted(per_class.items())},
            "n": len(rows), "unknown": 1 - len(accepted) / len(rows),
            "likeliest": sum(a == b for a, b in zip(likeliest, truth)) / len(rows),
            "accepted": sum(accepted) / max(1, len(accepted))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=ROOT.parent / "shared" / "data" / "dogs-vs-cats-train-5000.zip")
    parser.add_argument("--work", type=Path, help="keep the sets and runs here (default: a temporary folder)")
    parser.add_argument("--sets", nargs="+", default=["pets-presplit", "orientation"])
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fit-bench-"))
    makers = {"pets-presplit": pets_presplit, "orientation": orientation}
    with zipfile.ZipFile(args.zip) as archive:
        for name in args.sets:
            source, held_out = makers[name](archive, work / name)
            run = work / name / "run"
            started = time.perf_counter()
            print(catsdogs("fit", str(source), "--out", str(run)).strip())
            seconds = time.perf_counter() - started
            scores = held_out_scores(catsdogs("predict", str(run), str(held_out)))
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_class"].items())
            print(f"{name}: fit {seconds:.0f} s; held-out accuracy {scores['accuracy']:.4f} on {scores['n']} photos "
                  f"({shown}); labelled unknown {scores['unknown']:.1%}, accuracy on the accepted "
                  f"{scores['accepted']:.4f}, of the most probable class {scores['likeliest']:.4f}")
            print(catsdogs("evaluate", str(run)).strip())


if __name__ == "__main__":
    main()
