"""`finetune-top` (fit's stage c): the base's last stage tuned on its cached inputs, saved as an ordinary `heads`
model whose base holds the tuned weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs.errors import UsageError
from catsdogs.models.backbones import get_backbone
from catsdogs.models.frozen import build_heads
from catsdogs.trainers.top_tuning import split_base

from helpers import make_class_folders


def test_the_cut_base_computes_what_the_whole_base_computes():
    spec = get_backbone("mobilenetv2")
    base = spec.build_base(64, None)
    assert spec.tuned_from(base) == "block_14_add"  # the last two blocks and the final convolution are tuned
    bottom, top = split_base(base, spec.tuned_from(base))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(top.predict_on_batch(bottom.predict_on_batch(images)), base.predict_on_batch(images),
                               atol=1e-4)
    assert set(map(id, top.layers[1:])) <= set(map(id, base.layers))  # the same layers: training the top tunes the base


def test_a_base_without_a_known_cut_is_refused_by_name():
    with pytest.raises(UsageError, match="finetune-top does not know where to cut vgg16"):
        get_backbone("vgg16").tuned_from(None)


@pytest.mark.slow
def test_finetune_top_tunes_only_the_last_stage_and_saves_a_heads_model(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=10, names=("ants", "bees", "wasps")), data)
    run = catsdogs.train(data=data, model="finetune-top", out=tmp_path / "run", backbone="mobilenetv2",
                         image_size=64, epochs=2, monitor="val_accuracy", calibration=False,
                         model_options={"weights": None})
    assert run.config["status"] == "complete" and run.config["tuned_from"] == "block_14_add"
    assert [row["epoch"] for row in run.history][0] == 0 and 2 <= len(run.history) <= 3  # the head alone, then tuning
    assert (run / "plots" / "lr_find.png").exists() and 3e-4 <= run.config["peak_learning_rate"] <= 1e-3
    keras.utils.set_random_seed(run.config["seed"])  # the run's random weights before tuning
    untuned = build_heads(64, backbone="mobilenetv2", weights=None, num_classes=3)
    tuned = run.model
    before = untuned.get_layer("mobilenetv2")
    changed = {layer.name for layer in tuned.get_layer("mobilenetv2").layers if layer.weights and any(
               not np.allclose(a, b) for a, b in zip(layer.get_weights(), before.get_layer(layer.name).get_weights()))}
    saved = run.saved_epoch
    if saved["epoch"] > 0:  # a tuning epoch kept: the last stage moved, nothing below it, no BatchNorm statistics
        assert changed and all(name.startswith(("block_15", "block_16", "Conv_1")) for name in changed)
        assert not any(name.endswith(("BN", "bn")) for name in changed)
    else:
        assert not changed
    # the saved model scores the validation split as the trainer did (its features cached under the tuned weights)
    predictions = run.predict(data / "validation")
    labels = [Path(p.path).parent.name for p in predictions]
    accuracy = np.mean([p.label == label for p, label in zip(predictions, labels)])
    assert accuracy == pytest.approx(saved["val_accuracy"], abs=1e-6)
    def no_decoding(*args, **kwargs):
        raise AssertionError("calibrate decoded photos instead of reading the features cache")

    monkeypatch.setattr("catsdogs.dataset.load_split", no_decoding)  # the tuned features were cached by training
    assert catsdogs.calibrate(run.path, accept=0.9).novelty.accepted is not None
