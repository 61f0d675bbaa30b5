"""Open-set rejection on real photos: a cats/dogs `fit` RUN given photos of other subjects (TrashNet), and a
TrashNet RUN given cats and dogs (issue 26).

    python benchmarks/open_set.py [--per-class 400] [--held-out 200] [--backbone B] [--work DIR]
                                  [--run RUN] [--trash-run RUN]

Measures, for each RUN: the share of the other subject's photos labelled unknown, the share of held-out photos
of its own classes (never seen by fit) labelled unknown, the accuracy on the held-out photos it accepts, and
(from `catsdogs.calibrate(run, other=...)`) the AUROC and rejection of every novelty method at accept=0.98.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PETS, TRASH = SHARED / "dogs-vs-cats-train-5000.zip", SHARED / "trashnet-resized-2527.zip"


def _number(name: str) -> int:
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else 0


def extract(zip_path: Path, label_of, fit_dir: Path, held_dir: Path, per_class: int, held_out: int) -> None:
    """The first `per_class` photos of each class (by number) into fit_dir/CLASS, the next `held_out` into
    held_dir/CLASS."""
    with zipfile.ZipFile(zip_path) as archive:
        names: dict[str, list[str]] = {}
        for name in archive.namelist():
            if name.lower().endswith(".jpg") and (label := label_of(name)):
                names.setdefault(label, []).append(name)
        for label, members in names.items():
            members.sort(key=_number)
            for i, name in enumerate(members[:per_class + held_out]):
                target = (fit_dir if i < per_class else held_dir) / label / Path(name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))


def measure(run_path: Path, held: Path, other: Path) -> dict:
    import catsdogs

    run = catsdogs.Run(run_path)
    summary = run.calibrate(0.98, other)
    own = [(p, folder.name) for folder in sorted(held.iterdir()) for p in run.predict(folder)]
    foreign = run.predict(other)
    accepted = [(p, truth) for p, truth in own if not p.unknown]
    return {"other_unknown": sum(p.unknown for p in foreign) / len(foreign), "n_other": len(foreign),
            "held_out_unknown": 1 - len(accepted) / len(own), "n_held_out": len(own),
            "accuracy_accepted": sum(p.label == truth for p, truth in accepted) / max(1, len(accepted)),
            "accuracy_all": sum(max(p.probabilities, key=p.probabilities.get) == truth for p, truth in own) / len(own),
            "methods": summary.other["methods"], "calibration": summary.calibration}


def show(title: str, result: dict) -> None:
    print(f"\n{title}")
    print(f"  other subjects labelled unknown: {result['other_unknown']:.1%} of {result['n_other']}")
    print(f"  held-out own photos labelled unknown: {result['held_out_unknown']:.1%} of {result['n_held_out']}")
    print(f"  accuracy on accepted held-out photos: {result['accuracy_accepted']:.2%} "
          f"(all: {result['accuracy_all']:.2%})")
    c = result["calibration"]
    print(f"  calibration: {c.method}, validation NLL {c.nll_before:.4f} -> {c.nll_after:.4f}")
    for name, numbers in result["methods"].items():
        print(f"  {name:24s} AUROC {numbers['auroc']:.4f}  rejected at accept 0.98: {numbers['rejected']:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=400, help="fit photos per class (cats/dogs)")
    parser.add_argument("--trash-per-class", type=int, default=100, help="fit photos per TrashNet class")
    parser.add_argument("--held-out", type=int, default=200, help="held-out photos per class")
    parser.add_argument("--backbone", help="one candidate backbone (default: fit's own candidates)")
    parser.add_argument("--work", type=Path, help="default: a temporary folder")
    parser.add_argument("--run", type=Path, help="a cats/dogs RUN to measure instead of fitting one")
    parser.add_argument("--trash-run", type=Path, help="a TrashNet RUN to measure instead of fitting one")
    args = parser.parse_args()
    os.environ.setdefault("CATSDOGS_WEIGHTS", str(SHARED.parent / "weights" / "keras"))  # offline ImageNet weights
    import catsdogs

    work = args.work or Path(tempfile.mkdtemp(prefix="open-set-"))
    pets_fit, pets_held = work / "pets-fit", work / "pets-held"
    trash_fit, trash_held = work / "trash-fit", work / "trash-held"
    if not pets_held.exists():
        extract(PETS, lambda n: Path(n).name.split(".")[0], pets_fit, pets_held, args.per_class, args.held_out)
        extract(TRASH, lambda n: n.split("/")[1] if n.count("/") == 2 else None, trash_fit, trash_held,
                args.trash_per_class, args.held_out // 4)
    started = time.perf_counter()
    backbones = [args.backbone] if args.backbone else None
    pets_run = args.run or catsdogs.fit(pets_fit, work / "pets-run", backbones=backbones, report=False,
                                        audit=False, overwrite=True).path
    trash_run = args.trash_run or catsdogs.fit(trash_fit, work / "trash-run", backbones=backbones,
                                               report=False, audit=False, overwrite=True).path
    fitted = time.perf_counter() - started
    show(f"cats/dogs RUN {pets_run} given TrashNet photos", measure(Path(pets_run), pets_held, trash_held))
    show(f"TrashNet RUN {trash_run} given cat and dog photos", measure(Path(trash_run), trash_held, pets_held))
    print(f"\nfits {fitted:.0f} s; total {time.perf_counter() - started:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
