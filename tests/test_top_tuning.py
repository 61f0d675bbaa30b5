"""`finetune-top` (fit's stage c): the base's last stage tuned on its cached inputs, saved as an ordinary `heads`
model whose base holds the tuned weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs.errors import UsageError
from catsdogs.models.backbones import get_backbone
from catsdogs.models.frozen import (
    branch_extractor,
    build_heads,
    pretrained_twin,
    split_base,
    top_inputs_extractor,
    with_reference_top,
)
from catsdogs.trainers.features import cache_file

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


def test_one_forward_pass_gives_the_features_and_the_top_inputs():
    model = build_heads(64, backbone="mobilenetv2", weights=None, num_classes=2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    features, stacked = top_inputs_extractor(model, "mobilenetv2", with_features=True).predict_on_batch(images)
    expected = branch_extractor(model, "mobilenetv2").predict_on_batch(images)
    alone = top_inputs_extractor(model, "mobilenetv2").predict_on_batch(images)
    for got, want in ((features, expected), (stacked, alone)):  # random weights: tiny values, compared relatively
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert stacked.shape[1] == 2 and not np.allclose(stacked[:, 0], stacked[:, 1], rtol=0.01, atol=0)  # and mirror


def test_novelty_of_a_tuned_top_reads_the_pretrained_top_on_the_same_pass():
    model = build_heads(64, backbone="mobilenetv2", weights=None, num_classes=2)
    base = model.get_layer("mobilenetv2")
    top = split_base(base, get_backbone("mobilenetv2").tuned_from(base))[1]
    pretrained = top.get_weights()
    rng = np.random.default_rng(0)
    top.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim > 1 else w for w in pretrained])
    images = rng.uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    features, output = with_reference_top(model, pretrained).predict_on_batch(images)
    twin = pretrained_twin(model, pretrained)
    want = branch_extractor(twin, "mobilenetv2").predict_on_batch(images)
    np.testing.assert_allclose(features, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    tuned = branch_extractor(model, "mobilenetv2").predict_on_batch(images)
    assert not np.allclose(features, tuned, rtol=0.01, atol=0)  # the tuned top's features are not the embedding
    np.testing.assert_allclose(output, model.predict_on_batch(images), rtol=1e-4, atol=1e-6)  # the model's answer
    fresh = build_heads(64, backbone="mobilenetv2", weights=None, num_classes=2)  # fit's heads stage, same weights
    fresh.get_layer("mobilenetv2").set_weights(twin.get_layer("mobilenetv2").get_weights())
    ids = ["a", "b"]
    assert cache_file(Path("c"), branch_extractor(fresh, "mobilenetv2"), ids, "train") == \
        cache_file(Path("c"), branch_extractor(twin, "mobilenetv2"), ids, "train")  # its cached features are found
    with pytest.raises(UsageError, match="do not fit mobilenetv2's top"):
        with_reference_top(model, pretrained[:-1])


@pytest.mark.slow
def test_heads_keep_the_top_inputs_and_finetune_top_extracts_nothing_again(tmp_path: Path, monkeypatch):
    from catsdogs.trainers import features

    data, cache = tmp_path / "data", tmp_path / "cache"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=8, names=("ants", "bees")), data)
    common = dict(data=data, backbone="mobilenetv2", image_size=64, calibration=False, cache_dir=cache,
                  model_options={"weights": None})
    catsdogs.train(model="heads", out=tmp_path / "heads", keep_top_inputs=True, **common)
    kept = sorted(path.name.rsplit("-", 1)[-1] for path in cache.glob("features-*.npy")
                  if np.load(path, mmap_mode="r").ndim == 5)
    assert kept == ["train.npy", "validation.npy"]
    extracted = []
    for name in ("extract_features", "extract_jointly"):
        real = getattr(features, name)
        monkeypatch.setattr(features, name, lambda *args, real=real, name=name, **kwargs: (extracted.append(name),
                                                                                              real(*args, **kwargs))[1])
    run = catsdogs.train(model="finetune-top", out=tmp_path / "top", epochs=1, **common)
    assert run.config["status"] == "complete" and extracted == []  # its inputs came from the heads' forward pass


@pytest.mark.slow
def test_finetune_top_tunes_only_the_last_stage_and_saves_a_heads_model(tmp_path: Path, monkeypatch, caplog):
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
    first = catsdogs.calibrate(run.path, accept=0.9)  # the pretrained top's features extracted once, cached
    assert first.novelty.reference_top is not None and first.novelty.accepted is not None
    assert json.loads((run / "calibration.json").read_text())["novelty"]["embedding"] == "pretrained top"

    def no_decoding(*args, **kwargs):
        raise AssertionError("calibrate decoded photos instead of reading the features cache")

    def no_weights(*args, **kwargs):
        raise AssertionError("calibrate built the pretrained top again instead of reading RUN/novelty.npz")

    monkeypatch.setattr("catsdogs.dataset.load_split", no_decoding)  # the tuned features were cached by training
    monkeypatch.setattr("catsdogs.models.frozen.pretrained_top_weights", no_weights)
    again = catsdogs.calibrate(run.path, accept=0.9)
    assert again.novelty.threshold == first.novelty.threshold
    for a, b in zip(again.novelty.reference_top, first.novelty.reference_top):
        assert (a == b).all()
    scored = catsdogs.Run(run.path).predict(data / "validation")  # predict reads the same embeddings
    assert np.mean([not p.unknown for p in scored]) == pytest.approx(again.novelty.accepted)
    path = run / "novelty.npz"  # a tampered top: one line naming the file, never a wrong answer
    with np.load(path) as stored:
        arrays = dict(stored)
    settings = json.loads((run / "calibration.json").read_text())  # as an earlier release calibrated it
    del settings["novelty"]["embedding"]
    (run / "calibration.json").write_text(json.dumps(settings))
    np.savez(path, **{name: array for name, array in arrays.items() if not name.startswith("top_")})
    with caplog.at_level(logging.WARNING, logger="catsdogs"):
        catsdogs.Run(run.path).predict(data / "validation")
    assert f"`catsdogs calibrate {run.path}` sets its unknown threshold on the pretrained ones" in caplog.text
    for tampered, words in (({"top_000": arrays["top_000"][..., :1]}, "do not fit mobilenetv2's top"),
                            ({"top_001": np.full_like(arrays["top_001"], np.nan)}, "top_001 holds values that are not")):
        np.savez(path, **{**arrays, **tampered})
        with pytest.raises(UsageError) as error:
            catsdogs.Run(run.path).predict(data / "validation")
        assert str(error.value).startswith(f"{path}: ") and words in str(error.value)
        assert str(error.value).endswith(f"run `catsdogs calibrate {run.path}` to rebuild it")
    monkeypatch.undo()  # the advice works: a top that does not fit the model is rebuilt, not kept
    np.savez(path, **{**arrays, "top_000": arrays["top_000"][..., :1]})
    rebuilt = catsdogs.calibrate(run.path, accept=0.9).novelty.reference_top
    assert [w.shape for w in rebuilt] == [arrays[f"top_{i:03d}"].shape for i in range(len(rebuilt))]
