"""Open-set rejection on real photos: a cats/dogs `fit` RUN given photos of other subjects (TrashNet), and a
TrashNet RUN given cats and dogs (issue 26).

    python benchmarks/open_set.py [--per-class 800] [--held-out 200] [--backbone B] [--work DIR]
                                  [--run RUN] [--trash-run RUN]

Fits both RUNs with `catsdogs.fit`'s defaults (unless given), calibrates them (accept 0.98) and predicts
photos they never saw through `Run.predict`: held-out photos of their own classes, and the other RUN's
subject (for the cats/dogs RUN: every TrashNet photo outside the TrashNet RUN's fit folder). The other
subject's photos are split in two halves by a seeded shuffle of their names: half A to choose a novelty method
(benchmarks/open_set_methods.py), half B to report. Writes WORK/NAME-embeddings.npz (embeddings and raw
probabilities of train, validation, held-out and other photos) for open_set_methods.py.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PETS, TRASH = SHARED / "dogs-vs-cats-train-5000.zip", SHARED / "trashnet-resized-2527.zip"
SPLIT_SEED = 26


def _number(name: str) -> int:
    found = re.findall(r"\d+", Path(name).stem)
    return int(found[-1]) if found else 0


def extract(zip_path: Path, label_of, fit_dir: Path | None, held_dir: Path, per_class: int, held_out: int) -> None:
    """The first `per_class` photos of each class (by number) into fit_dir/CLASS (None: skipped), the next
    `held_out` into held_dir/CLASS."""
    with zipfile.ZipFile(zip_path) as archive:
        names: dict[str, list[str]] = {}
        for name in archive.namelist():
            if name.lower().endswith(".jpg") and (label := label_of(name)):
                names.setdefault(label, []).append(name)
        for label, members in names.items():
            members.sort(key=_number)
            for i, name in enumerate(members[:per_class + held_out]):
                if i < per_class and fit_dir is None:
                    continue
                target = (fit_dir if i < per_class else held_dir) / label / Path(name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))


def halves(names: list[str], seed: int = SPLIT_SEED) -> np.ndarray:
    """True for half B (report), False for half A (choose), by a seeded shuffle of the sorted names."""
    order = np.random.default_rng(seed).permutation(len(names))
    in_b = np.zeros(len(names), bool)
    in_b[np.argsort(np.array(names))[order[:len(names) // 2]]] = True
    return in_b


def _predict_recording(run, folder: Path):
    """Run.predict(folder), and the (embeddings, outputs) its predictor computed, in the same order."""
    predictor = run.predictor()
    recorded, embed = [], predictor.trust.embed

    def recording(images, batch_size=64):
        result = embed(images, batch_size)
        recorded.append(result)
        return result

    predictor.trust.embed = recording
    try:
        predictions = run.predict(folder)
    finally:
        predictor.trust.embed = embed
    embeddings = np.concatenate([e for e, _ in recorded])
    outputs = np.concatenate([o for _, o in recorded])
    assert len(embeddings) == len(predictions), "one embedding per prediction"
    return predictions, embeddings, outputs


def measure(run_path: Path, held: Path, other: Path, dump: Path) -> dict:
    import catsdogs
    from catsdogs.decision import class_probabilities
    from catsdogs.models.frozen import pretrained_twin
    from catsdogs.novelty import embedding_model
    from catsdogs.run_files import read_config, read_run_classes
    from catsdogs.trust import _embeddings

    run = catsdogs.Run(run_path)
    summary = run.calibrate(0.98)
    classes = read_run_classes(run_path)
    own, own_e, own_o, own_labels = [], [], [], []
    for folder in sorted(held.iterdir()):
        predictions, e, o = _predict_recording(run, folder)
        own += [(p, folder.name) for p in predictions]
        own_e.append(e)
        own_o.append(o)
        own_labels += [classes.index(folder.name)] * len(predictions)
    foreign, other_e, other_o = _predict_recording(run, other)
    names = [str(Path(p.path).relative_to(other)) for p in foreign]
    in_b = halves(names)
    accepted = [(p, truth) for p, truth in own if not p.unknown]
    config = read_config(run_path)
    model, top = run.model, summary.novelty.reference_top  # a tuned top: the pretrained top's features
    (train_e, train_labels), (val_e, val_o, val_labels) = _embeddings(
        model, embedding_model(model, top), config, Path(config["data"]), classes, None, 0,
        features_cache=run_path / "cache", reference=None if top is None else pretrained_twin(model, top))
    np.savez_compressed(dump, train=train_e, train_labels=train_labels, val=val_e,
                        val_raw=class_probabilities(val_o), val_labels=val_labels, held=np.concatenate(own_e),
                        held_raw=class_probabilities(np.concatenate(own_o)), held_labels=np.array(own_labels),
                        other=other_e, other_raw=class_probabilities(other_o), other_b=in_b, other_names=names)
    unknown = np.array([p.unknown for p in foreign])
    return {"other_unknown_b": unknown[in_b].mean(), "other_unknown": unknown.mean(), "n_other": len(foreign),
            "n_b": int(in_b.sum()), "held_out_unknown": 1 - len(accepted) / len(own), "n_held_out": len(own),
            "accuracy_accepted": sum(p.label == truth for p, truth in accepted) / max(1, len(accepted)),
            "accuracy_all": sum(max(p.probabilities, key=p.probabilities.get) == truth for p, truth in own) / len(own),
            "calibration": summary.calibration, "novelty": summary.novelty, "backbone": config.get("backbone"),
            "model": config.get("model"), "embedding": "pretrained top" if top is not None else "model"}


def show(title: str, result: dict) -> None:
    print(f"\n{title} (backbone {result['backbone']}, {result['model']}; novelty on the {result['embedding']}'s "
          "features)")
    n = result["novelty"]
    print(f"  novelty {n.method}: threshold {n.threshold:.4g}, {n.accepted:.1%} of validation accepted")
    print(f"  other subjects labelled unknown: {result['other_unknown_b']:.1%} of {result['n_b']} (half B; "
          f"all {result['n_other']}: {result['other_unknown']:.1%})")
    print(f"  held-out own photos labelled unknown: {result['held_out_unknown']:.1%} of {result['n_held_out']}")
    print(f"  accuracy on accepted held-out photos: {result['accuracy_accepted']:.2%} "
          f"(all: {result['accuracy_all']:.2%})")
    c = result["calibration"]
    print(f"  calibration: {c.method}, validation NLL {c.nll_before:.4f} -> {c.nll_after:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=800,
                        help="fit photos per class (cats/dogs; up to 800 keeps every photo an original, N <= 1000)")
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
    trash_fit, trash_held, trash_other = work / "trash-fit", work / "trash-held", work / "trash-other"
    trash_label = lambda n: n.split("/")[1] if n.count("/") == 2 else None  # noqa: E731
    if not pets_held.exists():
        extract(PETS, lambda n: Path(n).name.split(".")[0], pets_fit, pets_held, args.per_class, args.held_out)
        extract(TRASH, trash_label, trash_fit, trash_held, args.trash_per_class, args.held_out // 4)
    if not trash_other.exists():  # every TrashNet photo the TrashNet RUN was not fitted on
        extract(TRASH, trash_label, None, trash_other, args.trash_per_class, 10**6)
    started = time.perf_counter()
    backbones = [args.backbone] if args.backbone else None
    pets_run = args.run or catsdogs.fit(pets_fit, work / "pets-run", backbones=backbones, report=False,
                                        audit=False, overwrite=True).path
    trash_run = args.trash_run or catsdogs.fit(trash_fit, work / "trash-run", backbones=backbones,
                                               report=False, audit=False, overwrite=True).path
    fitted = time.perf_counter() - started
    show(f"cats/dogs RUN {pets_run} given TrashNet photos",
         measure(Path(pets_run), pets_held, trash_other, work / "pets-embeddings.npz"))
    show(f"TrashNet RUN {trash_run} given cat and dog photos",
         measure(Path(trash_run), trash_held, pets_held, work / "trash-embeddings.npz"))
    print(f"\nfits {fitted:.0f} s; total {time.perf_counter() - started:.0f} s; work folder {work}")


if __name__ == "__main__":
    main()
