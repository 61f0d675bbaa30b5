"""Classify images with a trained RUN: arrays, files and folders, in batches."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.decision import class_probabilities, decide
from catsdogs.engines import Engine, create_engine
from catsdogs.errors import UsageError, one_line
from catsdogs.images import ImageError, batch_for, decode_workers, load_image, resize
from catsdogs.novelty import one_output
from catsdogs.options import check_threshold
from catsdogs.run_files import check_run, load_run_model, read_threshold
from catsdogs.sources import OTHER_IMAGE_SUFFIXES, iter_image_files

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One image's result: the label and each class's probability, or the reason it failed."""

    path: str
    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str = ""
    unknown: bool = False  # rejected as unlike the training photos (label "unknown"; catsdogs.trust)
    novelty: float | None = None  # higher = less like the training photos; None without RUN/calibration.json


class Predictor:
    """A loaded RUN, ready to classify raw uint8 RGB images (resized to the model's input size).

    Two classes: the label is classes[1] when p(classes[1]) >= the threshold (tuned on validation, else 0.5).
    More: the most probable class. `engine`: keras, onnx, openvino, or auto (the fastest verified one;
    catsdogs.engines); `samples`: images to verify an exported engine on.
    """

    def __init__(self, run: Path, *, threshold: float | None = None, tta: bool = False, batch_size: int = 32,
                 model=None, engine: str = "keras", samples: np.ndarray | None = None, calibrated: bool = True):
        self.run = Path(run)
        threshold = check_threshold(threshold)  # before loading anything: nan, inf, 2, -1 refused
        self.model = model if model is not None else load_run_model(self.run)
        self.classes = check_run(self.run, self.model)  # classes.json against the model and config.json
        self.tuned_threshold = read_threshold(self.run) if len(self.classes) == 2 else None
        if threshold is not None and len(self.classes) != 2:
            raise UsageError(f"threshold needs 2 classes; this run has {len(self.classes)} (the predicted class "
                             "is the most probable one)", "threshold")
        # hook: catsdogs.trust (calibration + unknown); a tuned threshold (raw p) is mapped onto calibrated p
        from catsdogs.trust import load_trust

        self.trust = load_trust(self.run, self.model) if calibrated else None
        self.threshold = threshold if threshold is not None else (self.tuned_threshold or 0.5)
        if threshold is None and self.tuned_threshold is not None and self.trust is not None:
            self.threshold = self.trust.calibration.map_threshold(self.threshold)
        self.image_size = int(self.model.input_shape[1])
        self.tta, self.batch_size = tta, min(batch_size, batch_for(self.image_size))
        self.forward, self.joint = self._engines(engine, samples)  # keras, onnx, openvino or auto
        self.engine = self.forward.name

    def _engines(self, engine: str, samples: np.ndarray | None) -> tuple[Engine, Engine | None]:
        """The model's engine, and for a RUN with unknown-photo data whose engine is not Keras, the engine of one
        graph giving its embeddings and its output (`novelty.one_output`: else a second, Keras, pass would embed)."""
        if self.trust is None or self.trust.novelty is None or engine in ("keras", "int8"):
            return create_engine(self.run, self.model, engine, samples), None
        both = one_output(self.trust.joint)  # a tampered novelty.npz: its one-line error, here
        try:
            joint = create_engine(self.run, both, engine, samples, variant=self._joint_key())
        except Exception as error:  # noqa: BLE001 - the model alone may still export; Keras then embeds
            alone = create_engine(self.run, self.model, engine, samples)  # its own error, if it fails too
            log.log(logging.INFO if engine == "auto" else logging.WARNING, "engine %s: the graph with the "
                    "embeddings failed (%s); the embeddings come from Keras", engine, one_line(error))
            return alone, None
        if joint.name == "keras":
            return create_engine(self.run, self.model, "keras"), None
        units = self._units
        return Engine(joint.name, lambda batch: joint(batch)[:, -units:]), joint

    def _joint_key(self) -> str:
        """Names the embeddings graph: its embedding layer, and a tuned top's pretrained weights (novelty.npz)."""
        digest = hashlib.sha256(b"one_output-1")
        for array in self.trust.novelty.reference_top or []:
            digest.update(np.ascontiguousarray(array, np.float32).tobytes())
        return "joint-" + digest.hexdigest()[:8]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """n x N (calibrated) class probabilities of uint8 images (n x S x S x 3); with TTA, averaged with the mirror."""
        return self.assess(images)[1]

    def scores(self, images: np.ndarray) -> np.ndarray:
        """n x (N + 1): the class probabilities, then the novelty (NaN without calibration data)."""
        _, probabilities, novelty = self.assess(images)
        novelty = np.full(len(probabilities), np.nan, np.float32) if novelty is None else novelty
        return np.concatenate([probabilities, novelty[:, None]], axis=1)

    def assess(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(raw probabilities, calibrated probabilities, novelty or None) of uint8 images (catsdogs.trust)."""
        if self.trust is None:
            raw = self.raw_probabilities(images)
            return raw, raw, None
        embeddings = None
        if self.trust.novelty is not None and (self.joint is not None or self.engine == "keras") and len(images):
            embeddings, outputs = self._embed(images)  # one pass for both
            raw = class_probabilities(self._with_mirror(outputs, images) if self.tta else outputs)
        else:
            raw = self.raw_probabilities(images)
            if self.trust.novelty is not None and len(images):
                embeddings = self.trust.embed(images, self.batch_size)[0]
        probabilities = self.trust.calibration.apply(raw)
        novelty = self.trust.novelty.score(embeddings, probabilities) if embeddings is not None else None
        if novelty is None and self.trust.novelty is not None:
            novelty = np.zeros(0, np.float32)
        return raw, probabilities, novelty

    def assess_pooled(self, pooled: np.ndarray, embeddings: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`assess` from the model's `pool` features (a `heads` run's cached features): only the head runs.
        `embeddings`: the novelty's, when not these (a tuned top's pretrained features, catsdogs.novelty)."""
        raw = class_probabilities(self.model.get_layer("head").predict(pooled, verbose=0, batch_size=256))
        if self.trust is None:
            return raw, raw, None
        probabilities = self.trust.calibration.apply(raw)
        embeddings = pooled if embeddings is None else embeddings
        novelty = self.trust.novelty.score(embeddings, probabilities) if self.trust.novelty is not None else None
        return raw, probabilities, novelty

    def raw_probabilities(self, images: np.ndarray) -> np.ndarray:
        """n x N class probabilities as the model gives them (before calibration)."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        outputs = np.concatenate([self.forward(batch) for batch in self._batches(images)])
        return class_probabilities(self._with_mirror(outputs, images) if self.tta else outputs)

    def _batches(self, images: np.ndarray) -> Iterator[np.ndarray]:
        return (images[start:start + self.batch_size] for start in range(0, len(images), self.batch_size))

    def _with_mirror(self, outputs: np.ndarray, images: np.ndarray) -> np.ndarray:
        """The model's outputs averaged with those of the mirrored images (test-time augmentation)."""
        return (outputs + np.concatenate([self.forward(batch[:, :, ::-1]) for batch in self._batches(images)])) / 2

    def _embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, raw outputs) of images in one pass: the exported joint graph, else Keras (catsdogs.trust)."""
        if self.joint is None:
            return self.trust.embed(images, self.batch_size)
        both = np.concatenate([self.joint(batch) for batch in self._batches(images)])
        return both[:, :-self._units], both[:, -self._units:]

    @property
    def _units(self) -> int:
        """The model's output units (1 for a sigmoid over two classes)."""
        return int(self.model.outputs[0].shape[-1])

    def predicted_index(self, probabilities: np.ndarray) -> np.ndarray:
        """The predicted class index of each row of class probabilities."""
        return decide(probabilities, self.threshold)

    def label_of(self, probabilities: np.ndarray) -> str:
        """The predicted label of one image's class probabilities."""
        return self.classes[int(self.predicted_index(probabilities)[0])]

    def as_prediction(self, path: str, probabilities: np.ndarray, novelty: float | None = None) -> Prediction:
        """One image's Prediction; with a novelty above the RUN's threshold, the label is "unknown"."""
        named = {name: float(p) for name, p in zip(self.classes, probabilities)}
        if novelty is None or np.isnan(novelty) or self.trust is None or self.trust.novelty is None:
            return Prediction(path, self.label_of(probabilities), named)
        unknown = not bool(self.trust.novelty.accepts(novelty))
        return Prediction(path, "unknown" if unknown else self.label_of(probabilities), named,
                          unknown=unknown, novelty=float(novelty))

    def _predictions(self, names: list[str], images: np.ndarray) -> list[Prediction]:
        _, probabilities, novelty = self.assess(images)
        novelty = [None] * len(names) if novelty is None else novelty
        return [self.as_prediction(name, row, n) for name, row, n in zip(names, probabilities, novelty)]

    def predict_images(self, images: np.ndarray, names: Iterable[str] | None = None) -> list[Prediction]:
        """Classify an array of images (n x H x W x 3, or one H x W x 3), resized to the model's size."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UsageError(f"images must be an array n x H x W x 3 (RGB), got shape {images.shape}", "images")
        if images.shape[1:3] != (self.image_size, self.image_size):
            images = np.stack([resize(np.asarray(image, np.uint8), self.image_size) for image in images])
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        return self._predictions(names, images)

    def predict_paths(self, paths: Iterable[Path]) -> Iterator[Prediction]:
        """Classify files (folders expanded recursively) in order; unreadable files get an `error` row.
        Each batch's files are decoded in parallel (draft-mode JPEG decoding, `images.load_image`)."""
        files = iter_image_files([Path(p) for p in paths])
        with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
            while batch := [str(path) for path in itertools.islice(files, self.batch_size)]:
                yield from self._flush(list(zip(batch, pool.map(self._decode, batch))))

    def _decode(self, path: str) -> np.ndarray | str:
        """The image at the model's size, or the reason it cannot be read (a FIFO, a device, a file over
        64 MB, an image type we do not decode such as .svg or .jxl: each an error row, never a hang)."""
        suffix = Path(path).suffix.lower()
        if suffix in OTHER_IMAGE_SUFFIXES:
            return f"not a supported image type ({suffix})"
        try:
            return load_image(path, self.image_size)
        except ImageError as error:
            return str(error)

    def _flush(self, pending: list[tuple[str, np.ndarray | str]]) -> Iterator[Prediction]:
        images = [item for _, item in pending if not isinstance(item, str)]
        names = [path for path, item in pending if not isinstance(item, str)]
        rows = iter(self._predictions(names, np.stack(images)) if images else [])
        for path, item in pending:
            yield Prediction(path, "error", error=item) if isinstance(item, str) else next(rows)
