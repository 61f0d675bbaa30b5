"""Photos that belong together, so that carving splits never separates them: near-duplicates (perceptual hash,
`near_duplicates`) and bursts (the same camera, EXIF DateTimeOriginal at most `BURST_SECONDS` from the
previous frame). `prepare` assigns each group to one split as a unit."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from PIL import Image

from catsdogs.errors import UsageError
from catsdogs.images import register_openers
from catsdogs.near_duplicates import groups, hash_pairs

GROUP_MODES = ("near+burst", "near", "burst", "none")
BURST_SECONDS = 2.0
EXIF_IFD, DATE_TIME_ORIGINAL, MAKE, MODEL = 0x8769, 0x9003, 0x010F, 0x0110

Moment = tuple[str, float]  # (camera make and model, seconds)


def check_group(group: str) -> str:
    """`group` when it is one of GROUP_MODES, else UsageError naming the parameter."""
    if group not in GROUP_MODES:
        raise UsageError(f"group must be one of {', '.join(GROUP_MODES)}, got {group!r}", "group")
    return group


def exif_moment(data: bytes) -> Moment | None:
    """(camera, time in seconds) from a photo's EXIF make, model and DateTimeOriginal; None when it lacks them
    or they cannot be read (never an error: a photo without EXIF simply belongs to no burst)."""
    register_openers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = Image.open(io.BytesIO(data)).getexif()
            taken = exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL) or ""
        camera = f"{exif.get(MAKE, '')} {exif.get(MODEL, '')}".strip()
        when = datetime.strptime(str(taken).strip("\0 ")[:19], "%Y:%m:%d %H:%M:%S")
    except Exception:  # any broken EXIF means "no moment", the photo itself was checked already
        return None
    return (camera, (when - datetime(1970, 1, 1)).total_seconds()) if camera else None


def burst_pairs(moments: Sequence[Moment | None], seconds: float = BURST_SECONDS) -> list[tuple[int, int]]:
    """(i, j) of consecutive frames of one camera taken at most `seconds` apart (a burst is their chain)."""
    timed = sorted((m[0], m[1], i) for i, m in enumerate(moments) if m is not None)
    return [(a[2], b[2]) for a, b in zip(timed, timed[1:]) if a[0] == b[0] and b[1] - a[1] <= seconds]


def photo_groups(hashes: np.ndarray, moments: Sequence[Moment | None], group: str) -> list[int]:
    """The group (its smallest index) of each photo: linked by near-duplicate hashes and/or bursts, per `group`."""
    check_group(group)
    pairs: list[tuple[int, int]] = []
    if "near" in group:
        pairs += [(i, j) for i, j, _ in hash_pairs(hashes)]
    if "burst" in group:
        pairs += burst_pairs(moments)
    return groups(len(moments), pairs)
