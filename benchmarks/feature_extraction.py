"""Feature extraction through Keras against the fastest verified engine, in one process (not a test).

    PYTHONPATH=src python benchmarks/feature_extraction.py --data study/data [--cache-dir study/cache]
        [--backbone efficientnet_lite2] [--split train] [--images N]

Extracts the pooled features of N images of a split with the study's frozen base twice: Keras'
`predict_on_batch` (as before) and `catsdogs.trainers.features.extract_features` (the fastest engine verified
on the first batch), printing each one's images/s (engine export and check included) and their largest difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from catsdogs.dataset import load_split
from catsdogs.models.backbones import get_backbone
from catsdogs.models.pretrained import build_features
from catsdogs.trainers.features import extract_features, feature_extractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA (catsdogs prepare)")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=3000)
    args = parser.parse_args()
    size = get_backbone(args.backbone).image_size
    images = load_split(args.data, args.split, size, cache_dir=args.cache_dir).images[:args.images]
    extractor = feature_extractor(build_features(size, backbone=args.backbone))
    results = {}
    for label, minimum in (("keras", len(images) + 1), ("fastest verified engine", 0)):
        started = time.perf_counter()
        results[label] = np.asarray(extract_features(extractor, images, 32, args.split, engine_min_images=minimum))
        print(f"{label}: {len(images) / (time.perf_counter() - started):.1f} images/s", flush=True)
    diff = float(np.max(np.abs(results["keras"] - results["fastest verified engine"])))
    print(f"{len(images)} {args.split} images at {size} px, {args.backbone}; largest difference {diff:.2g}")


if __name__ == "__main__":
    main()
