"""The study's published numbers, shown beside catsdogs' own in the study's report and results.md."""

from __future__ import annotations

PUBLISHED = {  # Deep Learning with Python (Chollet, 1st ed.), the small-data chapter, VGG16 for the last rows
    "baseline": {"train": 0.85, "val": 0.82, "test": None},
    "augmented": {"train": 0.84, "val": 0.88, "test": 0.89},
    "features": {"train": None, "val": 0.90, "test": 0.897},
    "transfer": {"train": None, "val": 0.96, "test": None},
    "finetune": {"train": None, "val": 0.97, "test": 0.97},
}
