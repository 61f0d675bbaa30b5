"""The plan of `catsdogs fit`: this machine's speed on each backbone, the stages and their estimated seconds
against the budget, the ETA. Running the stages is catsdogs.fitting's; this module only decides and estimates.

Estimates are the measured speed (images per second of the frozen base) times the images a stage runs, plus
per-stage and per-photo constants calibrated on TrashNet's and 3670 cats/dogs' default fits (docs/fit.md); while
the stages run, their actual / estimated time scales the later estimates (MIN_PACE..MAX_PACE): a stage that no
longer fits is skipped, and one skipped at planning for time runs after all when the time left holds it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from catsdogs import fit_finetune
from catsdogs.budget import AFTER_ALL, Budget, format_seconds
from catsdogs.data_files import read_manifest
from catsdogs.errors import UsageError
from catsdogs.fit_finetune import TRAIN_SHARE, VALIDATION_SHARE

# calibrated on TrashNet's default fit on a quiet machine (docs/fit.md: the ETA within 8% there, 23% under load)
OVERHEAD_S = 5.0  # per stage: building the bases and the models, saving the run
HEADS_S_PER_PHOTO = 0.008  # per stage: the logistic C path, the dense head and the learning curve (~20 s for 2500)
TRAINED_SHARE = 0.85  # of the photos, the train and validation splits (whose features a stage extracts)
FIXED_S = 25.0  # calibration, evaluation, audit and report, on top of the stages (scaled with the photos below)
FIXED_S_PER_PHOTO = 0.01
MIN_PACE, MAX_PACE = 0.5, 3.0  # the measured speed is from a few images: the stages' times correct it
MAX_RESOLUTION, LARGER = 384, 1.25  # the resolution stage: up to 384 px, for photos 1.25x the base's input
BEST = "best"  # a stage's backbone chosen when it starts (the best single one so far)
# finetune-top, measured on TrashNet (EfficientNet-Lite2 at 260 px, docs/fit.md): a training example of the top
# (forward and backward) costs TOP_COST of a forward pass of the whole base, its forward alone TOP_FORWARD; its
# inputs are cached by the `heads` stage of the same base (TrainOptions.keep_top_inputs)
TOP_NAME = "finetune-top"
TOP_EPOCHS, TOP_COST, TOP_FORWARD, TOP_RANGE_STEPS, TOP_BATCH = 5, 0.27, 0.08, 40, 32


@dataclass
class Stage:
    """One planned stage: a `heads` run on one backbone or several (`a+b`), and its estimated seconds."""

    name: str
    backbone: str
    estimate_s: float
    status: str = "planned"  # planned, done, skipped
    seconds: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    image_size: int | None = None  # a higher resolution than the base's own
    model: str = "heads"  # or "finetune-top" (stage c), "finetune" (e: finetune-top on the photos, from c)
    learning_rate: float | None = None  # fine-tuning's peak rate, from the range test
    epochs: int | None = None  # (e)'s planned epochs
    epoch_s: float | None = None  # (e)'s estimated seconds per epoch
    note: str | None = None  # why it was skipped at planning (or that it ran after all)
    if_time: bool = False  # skipped at planning for time only: it runs if the stages before it leave the time

    @property
    def label(self) -> str:
        """The name, with (e)'s planned epochs."""
        return self.name + (f" ({self.epochs} epoch{'s' if self.epochs > 1 else ''})" if self.epochs else "")

    @property
    def folder(self) -> str:
        prefix = {"finetune": "finetune-", TOP_NAME: "top-"}.get(self.model, "")
        return prefix + self.backbone + (f"@{self.image_size}" if self.image_size else "")


def measure_speed(backbone: str, batch: int | None = None) -> float:
    """Images per second of the frozen base of `backbone` here (Keras, after one warm-up batch; the faster of two
    timed batches, a busy moment counting less), at the batch size that extraction uses."""
    import numpy as np

    from catsdogs.images import batch_for
    from catsdogs.models.backbones import get_backbone

    spec = get_backbone(backbone)
    batch = batch or batch_for(spec.image_size)
    base = spec.build_base(spec.image_size)
    images = np.random.default_rng(0).uniform(-1, 1, (batch, spec.image_size, spec.image_size, 3)).astype("float32")
    base.predict_on_batch(images)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        base.predict_on_batch(images)
        times.append(time.perf_counter() - started)
    return batch / max(min(times), 1e-3)


def plan(candidates: list[str], speeds: dict[str, float], photos: int, limit: Budget) -> list[Stage]:
    """The stages and their estimated seconds: (a) each backbone, (b) the two first together, (c) finetune-top;
    a UsageError when the budget cannot hold even the first stage."""
    def extraction(name: str) -> float:  # two views of each train and validation photo, then the heads
        return 2 * TRAINED_SHARE * photos / speeds[name] + stage_fixed_seconds(photos)

    stages = [Stage(f"heads {name}", name, extraction(name)) for name in candidates]
    if len(candidates) >= 2:
        pair = "+".join(candidates[:2])
        stages.append(Stage(f"heads {pair}", pair, extraction(candidates[1]) + OVERHEAD_S))  # a second base built
    fixed = finish_seconds(photos, speeds[candidates[0]])
    if not limit.unlimited and stages[0].estimate_s + fixed > limit.seconds:
        need = stages[0].estimate_s + fixed
        raise UsageError(f"budget {limit} is too small for even the first stage (heads on {candidates[0]}, about "
                         f"{format_seconds(need)} for {photos} photos here); give budget {math.ceil(need / 60)}m or more, "
                         "or 0 for no budget", "budget")
    if limit.unlimited:
        return stages[:len(candidates)]
    top = top_estimate_seconds(photos, speeds[candidates[0]], stage_fixed_seconds(photos))
    return stages + [Stage(f"{TOP_NAME} best backbone", BEST, top, model=TOP_NAME)]


def top_estimate_seconds(photos: int, speed: float, fixed_s: float) -> float:
    """Seconds of `finetune-top` for `photos` (all splits) at `speed` forward images per second of the base, with
    `fixed_s` for building, saving and the head (as a `heads` stage): its inputs are cached already; the range
    test, the epochs (the training views, then validation) and the top's pooled features of both splits twice
    (for the head first, then for the features cache under the tuned weights)."""
    train, validation = 2 * TRAIN_SHARE * photos, 2 * VALIDATION_SHARE * photos  # two views of each photo
    range_test = TOP_RANGE_STEPS * TOP_BATCH * TOP_COST
    epochs = TOP_EPOCHS * (train * TOP_COST + validation * TOP_FORWARD)
    return fixed_s + (range_test + epochs + 2 * (train + validation) * TOP_FORWARD) / speed


def make_room(stages: list[Stage], finish_s: float, left: float) -> list[Stage]:
    """When finetune-top would not fit the time `left`, skip the pair, then the other backbones' heads (the last
    first), as long as that lets it fit: it gains the most on a laptop CPU (docs/fit.md). The stages skipped."""
    top = next((s for s in stages if s.model == TOP_NAME and s.status == "planned"), None)
    return _skip_heads_for(stages, lambda: top is None or top in expected_stages(stages, finish_s, left), TOP_NAME)


def add_finetune(stages: list[Stage], speeds: dict[str, float], photos: int, limit: Budget,
                 finish_s: float) -> list[Stage]:
    """Append (e) (`finetune_stage`); when the budget cannot hold even one epoch of it, skip the pair, then the
    other backbones' heads, as long as that lets it run: on the sets large enough for the budget to be short,
    they were never chosen (docs/fit.md). The stages skipped for it."""
    def fits() -> bool:
        return finetune_stage(stages, speeds, photos, limit, finish_s).status == "planned" or \
            not any(s.model == TOP_NAME and s.status == "planned" for s in stages)

    skipped = _skip_heads_for(stages, fits, fit_finetune.NAME)
    stages.append(finetune_stage(stages, speeds, photos, limit, finish_s))
    return skipped


def _skip_heads_for(stages: list[Stage], fits, name: str) -> list[Stage]:
    """Skip the optional `heads` stages (the pair, then the other backbones', the last first) until `fits()`;
    none when skipping them all does not make it true. The stages skipped."""
    optional = [s for s in stages[1:] if s.model == "heads" and not s.image_size and s.status == "planned"][::-1]
    skipped: list[Stage] = []
    while not fits() and optional:
        stage = optional.pop(0)
        stage.status, stage.note = "skipped", f"skipped at planning to leave time for {name}"
        skipped.append(stage)
    if not fits():  # no room made: as planned
        for stage in skipped:
            stage.status, stage.note = "planned", None
        return []
    return skipped


def skip_unexpected(stages: list[Stage], finish_s: float, limit: Budget) -> list[Stage]:
    """Skip at planning each stage that the budget left cannot hold after the stages before it, its `note` saying
    what budget would: the plan's ETA is then what runs, unless the stages run faster than planned and leave the
    time for one of these after all (`admit_after_all`). The stages skipped."""
    expected = expected_stages(stages, finish_s, limit.left())
    skipped = []
    for index, stage in enumerate(stages):
        if stage.status == "planned" and stage not in expected:
            before = sum(s.estimate_s for s in stages[:index] if s in expected)
            need = math.ceil((limit.elapsed() + before + stage.estimate_s + finish_s) / 60)
            stage.status, stage.note = "skipped", f"skipped at planning: the budget cannot hold it after the " \
                                                  f"stages before it; give budget {need}m or more to run it ({AFTER_ALL})"
            stage.if_time = True
            skipped.append(stage)
    return skipped


def resolution_stage(stages: list[Stage], data_dir: Path) -> Stage | None:
    """(d) the best single backbone again at a higher resolution, when the photos are at least 1.25x larger than
    its input (their median shorter side, up to 384 px): fine detail (textures, materials) then shows."""
    from catsdogs.models.backbones import get_backbone

    sides = sorted(min(int(row["width"]), int(row["height"])) for row in read_manifest(data_dir, "train"))
    native = get_backbone(stages[0].backbone).image_size
    size = min(MAX_RESOLUTION, sides[len(sides) // 2] // 32 * 32) if sides else 0
    if size < LARGER * native:
        return None
    fixed = stage_fixed_seconds(len(read_manifest(data_dir)))  # fitting the heads does not grow with the pixels
    estimate = (stages[0].estimate_s - fixed) * (size / native) ** 2 + fixed
    return Stage(f"heads best backbone at {size} px", BEST, estimate, image_size=size)


def finetune_stage(stages: list[Stage], speeds: dict[str, float], photos: int, limit: Budget, finish_s: float) -> Stage:
    """(e) fine-tuning on the photos from (c)'s model (catsdogs.fit_finetune), planned at the first candidate's
    speed over its EPOCHS, or one epoch when only one fits; skipped at once (`note` says why) when (c) is not
    planned or the budget cannot hold one epoch after the other stages and `finish_s`."""
    speed, epochs = speeds[stages[0].backbone], fit_finetune.EPOCHS
    estimate = fit_finetune.estimate_seconds(photos, speed, epochs)
    stage = Stage(f"{fit_finetune.NAME} best backbone", BEST, estimate, model="finetune", epochs=epochs,
                  epoch_s=estimate - fit_finetune.estimate_seconds(photos, speed, epochs - 1) if epochs > 1 else None)
    before = limit.elapsed() + sum(s.estimate_s for s in stages if s.status != "skipped") + finish_s
    if not any(s.model == TOP_NAME and s.status == "planned" for s in stages):
        stage.status, stage.note = "skipped", f"{fit_finetune.NAME} skipped: it continues from {TOP_NAME}, not planned"
    elif (reason := fit_finetune.skip_reason(estimate, before, limit)) and not shorten(stage, limit.seconds - before):
        stage.status, stage.note, stage.if_time = "skipped", reason, True
    return stage


def admit_after_all(stage: Stage, stages: list[Stage], left_s: float, pace: float) -> bool:
    """Whether a stage skipped at planning for time only runs after all, its turn come: the stages before it ran
    faster than planned (`pace`, their actual / estimated seconds) and the `left_s` seconds (the finish reserved)
    hold it at that pace, (e) over one epoch if need be, and what it continues from ran. Its status and note
    then say so."""
    if stage.status != "skipped" or not stage.if_time or (stage.model == "finetune" and not any(
            s.model == TOP_NAME and s.status == "done" for s in stages)):
        return False
    shorten(stage, left_s / pace)
    if stage.estimate_s * pace > left_s:
        return False
    stage.status, stage.note = "planned", "skipped at planning for time; run after all, the stages before it " \
                                          "having run faster than planned"
    return True


def shorten(stage: Stage, left_s: float) -> bool:
    """Plan (e) over one epoch when `left_s` seconds cannot hold its planned epochs but hold one (at planning, or
    when the stages ran slower than planned); whether it did."""
    if stage.model != "finetune" or not stage.epoch_s or (stage.epochs or 1) <= 1 or stage.estimate_s <= left_s:
        return False
    one_epoch = stage.estimate_s - (stage.epochs - 1) * stage.epoch_s
    if one_epoch <= left_s:
        stage.estimate_s, stage.epochs = one_epoch, 1
        return True
    return False


def stage_fixed_seconds(photos: int) -> float:  # a stage's seconds besides extracting: building, saving, heads
    return OVERHEAD_S + HEADS_S_PER_PHOTO * photos


def finish_seconds(photos: int, speed: float) -> float:
    """After the stages: calibration, the test split's features (two views), evaluation, audit and report."""
    return 2 * (1 - TRAINED_SHARE) * photos / speed + FIXED_S + FIXED_S_PER_PHOTO * photos


def expected_stages(stages: list[Stage], finish_s: float, left: float) -> list[Stage]:
    """The planned stages expected to run: in order, each that still fits the time `left` with the finish
    reserved (as `_run_stages` decides; the first always runs)."""
    expected, total = [], 0.0
    for stage in (s for s in stages if s.status != "skipped"):
        if not expected or total + stage.estimate_s + finish_s <= left:
            expected.append(stage)
            total += stage.estimate_s
    return expected


def plan_eta(stages: list[Stage], finish_s: float, left: float = float("inf")) -> float:
    """Seconds from the plan to the end: the stages expected to run within `left` seconds, then the finish."""
    return sum(stage.estimate_s for stage in expected_stages(stages, finish_s, left)) + finish_s


def plan_line(stages: list[Stage], limit: Budget, finish_s: float) -> str:
    """The plan as printed: each stage to run and its estimate, the finish, the ETA."""
    expected = expected_stages(stages, finish_s, limit.left())
    steps = "; ".join(f"{stage.label} ~{format_seconds(stage.estimate_s)}"
                      + ("" if stage in expected else " (if time allows)") for stage in stages
                      if stage.status != "skipped")
    within = "no budget" if limit.unlimited else f"budget {format_seconds(limit.seconds)}"
    return (f"plan ({within}): {steps}; then calibration, test, audit and report ~{format_seconds(finish_s)}; "
            f"ETA {format_seconds(plan_eta(stages, finish_s, limit.left()))}")
