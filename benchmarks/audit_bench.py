"""Benchmark of `catsdogs audit`: plant faults in a copy of a prepared DATA, audit it, measure what is found.

    PYTHONPATH=src .venv/bin/python benchmarks/audit_bench.py [--data DATA] [--work DIR] [--photos 1500]
        [--flips N] [--copies N] [--seed 7]

Without --data, the shared zip (../shared/data/dogs-vs-cats-train-5000.zip) is prepared into WORK/data first.
`--photos N`: a seeded subset of N of DATA's photos (default all). `--flips`/`--copies` default to 40 per 1500
photos (issue 23's hidden set: 1500 photos, 40 flips, 40 near-copies). Planted into WORK/planted (a copy; DATA
is only read):
- label flips: photos moved to another class's folder (manifest updated);
- near-duplicate copies of other photos, each in another split than its original, cycling through: resized to
  half size, JPEG quality 60, 10% cropped (5% off each side), mirrored, brightness +20%;
- a few non-photos (flat colour, noise, a line drawing) as outliers.
Prints near-duplicate recall and false pairs, label-flip recall among the top 2 x flips label rows of issues.csv
(in its order: cleanlab's confident issues first, then the other disagreements, most doubted first), outlier
recall, and the audit's wall time without and with the features cached (WORK/cache).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
EDITS = ("resize", "jpeg60", "crop10", "mirror", "brightness20")


def edit(image: Image.Image, name: str) -> bytes:
    quality = 95
    if name == "resize":
        image = image.resize((max(32, image.width // 2), max(32, image.height // 2)), Image.Resampling.BILINEAR)
    elif name == "jpeg60":
        quality = 60
    elif name == "crop10":
        dx, dy = image.width // 20, image.height // 20
        image = image.crop((dx, dy, image.width - dx, image.height - dy))
    elif name == "mirror":
        image = ImageOps.mirror(image)
    elif name == "brightness20":
        image = ImageEnhance.Brightness(image).enhance(1.2)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def non_photo(index: int, rng: random.Random) -> bytes:
    kind = index % 3
    if kind == 0:
        image = Image.new("RGB", (300, 240), tuple(rng.randrange(256) for _ in range(3)))
    elif kind == 1:
        image = Image.fromarray(np.random.default_rng(index).integers(0, 256, (240, 300, 3), dtype=np.uint8))
    else:
        image = Image.new("RGB", (300, 240), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            box = sorted(rng.randrange(300) for _ in range(2)), sorted(rng.randrange(240) for _ in range(2))
            draw.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]), outline=(0, 0, 0), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def plant(data: Path, planted: Path, flips: int, copies: int, outliers: int, seed: int,
          photos: int | None = None) -> dict:
    """Copy DATA (or a seeded subset of `photos` of its photos) to `planted` and plant faults; returns what was
    planted."""
    shutil.rmtree(planted, ignore_errors=True)
    with open(data / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    if photos is not None and photos < len(rows):
        keep = set(random.Random(f"subset:{seed}").sample(range(len(rows)), photos))
        rows = [row for i, row in enumerate(rows) if i in keep]
    planted.mkdir(parents=True)
    for name in ("classes.json", "prepare.json"):
        shutil.copy2(data / name, planted / name)
    for row in rows:
        (planted / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data / row["path"], planted / row["path"])
    classes = json.loads((planted / "classes.json").read_text())
    rng = random.Random(seed)
    chosen = rng.sample(range(len(rows)), flips + copies)
    flipped, pairs = [], []
    for i in chosen[:flips]:
        row = rows[i]
        new_class = rng.choice([c for c in classes if c != row["class"]])
        split, _, name = row["path"].split("/")
        target = f"{split}/{new_class}/{name}"
        (planted / target).parent.mkdir(parents=True, exist_ok=True)
        (planted / row["path"]).rename(planted / target)
        row.update(path=target, **{"class": new_class})
        flipped.append(target)
    for n, i in enumerate(chosen[flips:]):
        row = rows[i]
        name = EDITS[n % len(EDITS)]
        split = rng.choice([s for s in ("train", "validation", "test") if s != row["split"]])
        with Image.open(planted / row["path"]) as image:
            data_bytes = edit(image.convert("RGB"), name)
        target = f"{split}/{row['class']}/copy{n}-{name}-{Path(row['path']).name}"
        (planted / target).write_bytes(data_bytes)
        with Image.open(io.BytesIO(data_bytes)) as image:
            width, height = image.size
        rows.append({**row, "path": target, "split": split, "sha256": hashlib.sha256(data_bytes).hexdigest(),
                     "width": width, "height": height, "source": f"planted:{name}"})
        pairs.append((row["path"], target, name))
    odd = []
    for n in range(outliers):
        data_bytes = non_photo(n, rng)
        target = f"{rng.choice(['train', 'validation', 'test'])}/{classes[n % len(classes)]}/nonphoto{n}.jpg"
        (planted / target).write_bytes(data_bytes)
        rows.append({"path": target, "class": classes[n % len(classes)], "split": target.split("/")[0],
                     "sha256": hashlib.sha256(data_bytes).hexdigest(), "width": 300, "height": 240,
                     "source": "planted:nonphoto"})
        odd.append(target)
    with open(planted / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {"flips": flipped, "pairs": pairs, "outliers": odd}


def score(issues, planted: dict, natural_pairs: set[frozenset]) -> dict:
    found_pairs = {frozenset((i.path, i.detail)) for i in issues if i.kind == "near_duplicate"}
    planted_pairs = {frozenset(p[:2]) for p in planted["pairs"]}
    missed = [p for p in planted["pairs"] if frozenset(p[:2]) not in found_pairs]
    false = {pair for pair in found_pairs - planted_pairs if not any("/nonphoto" in path for path in pair)}
    rows = [i for i in issues if i.kind == "label"]  # issues.csv order: confident first, then by strength
    labels = [i.path for i in rows][:2 * len(planted["flips"])]
    flipped = set(planted["flips"])
    outliers = {i.path for i in issues if i.kind == "outlier"}
    return {"pairs_planted": len(planted_pairs), "pairs_found": len(planted_pairs & found_pairs),
            "duplicate_recall": len(planted_pairs & found_pairs) / max(1, len(planted_pairs)),
            "missed_edits": [p[2] for p in missed], "pairs_reported": len(found_pairs),
            "pairs_of_nonphotos": sum(1 for pair in found_pairs if any("/nonphoto" in p for p in pair)),
            "false_pairs": len(false), "false_pairs_not_in_clean_data": len(false - natural_pairs),
            "false_pair_rate": len(false) / max(1, len(found_pairs)),
            "false_pair_rate_not_in_clean_data": len(false - natural_pairs) / max(1, len(found_pairs)),
            "flips": len(planted["flips"]), "label_issues": sum(1 for i in issues if i.kind == "label"),
            "flip_recall_top2x": len(flipped & set(labels)) / max(1, len(flipped)),
            "flips_in_top2x": len(flipped & set(labels)), "flips_reported": len(flipped & {i.path for i in rows}),
            "label_issues_confident": sum(1 for i in rows if i.confident),
            "flips_confident": len(flipped & {i.path for i in rows if i.confident}),
            "outliers_planted": len(planted["outliers"]), "outliers_reported": len(outliers),
            "outlier_recall": len(set(planted["outliers"]) & outliers) / max(1, len(planted["outliers"]))}


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import os

    if (ROOT.parent / "shared" / "weights" / "keras").is_dir():  # MobileNetV2's offline weights, as the CLI does
        os.environ.setdefault("CATSDOGS_WEIGHTS", str(ROOT.parent / "shared" / "weights" / "keras"))
    from catsdogs.auditing import audit
    from catsdogs.preparation import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared DATA (default: prepare the shared zip)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--photos", type=int, help="a seeded subset of this many photos (default: all of DATA)")
    parser.add_argument("--flips", type=int, help="label flips to plant (default 40 per 1500 photos)")
    parser.add_argument("--copies", type=int, help="near-copies to plant (default 40 per 1500 photos)")
    parser.add_argument("--outliers", type=int, default=9)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-clean", action="store_true", help="do not audit the unplanted DATA")
    parser.add_argument("--keep-cache", action="store_true", help="keep WORK/cache-planted (the uncached run is cached)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    data = args.data
    if data is None:
        data = work / "data"
        if not (data / "prepare.json").exists():
            print(prepare(ROOT.parent / "shared" / "data" / "dogs-vs-cats-train-5000.zip", data).line())
    natural: set[frozenset] = set()
    if not args.skip_clean:  # the whole DATA: the natural pairs of a subset are among them
        clean = audit(data, work / "audit-clean", backbone=args.backbone, cache_dir=work / "cache", html=False)
        natural = {frozenset((i.path, i.detail)) for i in clean.issues if i.kind == "near_duplicate"}
        print(f"clean data: {clean.line()}")
    with open(data / "manifest.csv", newline="") as handle:
        photos = min(args.photos or sys.maxsize, sum(1 for _ in csv.DictReader(handle)))
    flips = args.flips if args.flips is not None else round(40 * photos / 1500)
    copies = args.copies if args.copies is not None else round(40 * photos / 1500)
    planted = plant(data, work / "planted", flips, copies, args.outliers, args.seed, photos)
    if not args.keep_cache:
        shutil.rmtree(work / "cache-planted", ignore_errors=True)
    timings = {}
    for label in ("uncached", "cached"):
        started = time.perf_counter()
        result = audit(work / "planted", work / "audit", backbone=args.backbone, cache_dir=work / "cache-planted")
        timings[label] = time.perf_counter() - started
        print(f"{label}: {timings[label]:.1f} s wall ({', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())})")
    numbers = score(result.issues, planted, natural)
    numbers.update(photos=result.photos, subset=photos, seed=args.seed, backbone=result.backbone,
                   seconds_uncached=round(timings["uncached"], 1),
                   seconds_cached=round(timings["cached"], 1))
    print(result.line())
    print(json.dumps(numbers, indent=2))
    print(f"near-duplicate recall {numbers['duplicate_recall']:.1%} ({numbers['pairs_found']}/{numbers['pairs_planted']}), "
          f"false pairs {numbers['false_pairs']} of {numbers['pairs_reported']} reported "
          f"({numbers['pairs_of_nonphotos']} pairs of planted non-photos, alike by design, not counted) "
          f"({numbers['false_pair_rate']:.1%}; {numbers['false_pairs_not_in_clean_data']} not also found in the "
          f"unplanted data); label-flip recall in the top {2 * numbers['flips']} label rows: "
          f"{numbers['flip_recall_top2x']:.1%} ({numbers['flips_in_top2x']}/{numbers['flips']}; "
          f"{numbers['flips_confident']} among the {numbers['label_issues_confident']} confident rows, "
          f"{numbers['flips_reported']} among all {numbers['label_issues']}); "
          f"outlier recall {numbers['outlier_recall']:.0%}; audit of {numbers['photos']} photos: "
          f"{numbers['seconds_uncached']} s uncached, {numbers['seconds_cached']} s cached")


if __name__ == "__main__":
    main()
