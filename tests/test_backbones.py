"""Pretrained backbones and the features / transfer / finetune models, on tiny synthetic photos."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.dataset import load_split
from catsdogs.errors import CatsdogsError, UsageError
from catsdogs.models import MODELS, create_model
from catsdogs.models.backbones import backbones, get_backbone
from catsdogs.models.finetune import unfreeze_top
from catsdogs.models.pretrained import find_base
from catsdogs.models.weights import cache_names, install_weights, keras_cache, offline_weights_dir
from catsdogs.preparation import prepare
from catsdogs.trainers import features as features_module
from catsdogs.training import TrainOptions, train

from helpers import make_photo

pytestmark = pytest.mark.slow

SIZE = 32  # MobileNetV2's smallest input: fast enough to train in a test


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for kind, name in enumerate(("cat", "dog")):
        for index in range(20):
            make_photo(root / name / f"{index}.jpg", kind, index)
    return root


@pytest.fixture(scope="module")
def data(source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "data"
    prepare(source, out, train=24, val=8, test=8)
    return out


def options(data: Path, model: str, out: Path, **extra) -> TrainOptions:
    extra.setdefault("model_options", {"weights": None})
    extra.setdefault("backbone", "mobilenetv2")
    return TrainOptions(data=data, model=model, out=out, epochs=1, image_size=SIZE, batch_size=8,
                        precision="float32", **extra)


@pytest.fixture(scope="module")
def transfer_run(data: Path, tmp_path_factory) -> Path:
    return train(options(data, "transfer", tmp_path_factory.mktemp("runs") / "transfer"))


@pytest.fixture(scope="module")
def features_run(data: Path, tmp_path_factory) -> Path:
    return train(options(data, "features", tmp_path_factory.mktemp("runs") / "features"))


@pytest.fixture(scope="module")
def finetune_run(data: Path, transfer_run: Path, tmp_path_factory) -> Path:
    """Through the command line: --from-run and --unfreeze."""
    out = tmp_path_factory.mktemp("runs") / "finetune"
    assert main(["train", "--data", str(data), "--model", "finetune", "--from-run", str(transfer_run),
                 "--unfreeze", "12", "--epochs", "1", "--batch-size", "8", "--precision", "float32",
                 "--out", str(out)]) == 0
    return out


def base_weights(model) -> dict[tuple[str, int], np.ndarray]:
    """(layer name, index) -> value of every weight of the base, moving statistics included."""
    return {(layer.name, i): value for layer in find_base(model).layers for i, value in enumerate(layer.get_weights())}


# ---- backbones ------------------------------------------------------------------------------------

def test_backbones_are_named_like_keras_applications():
    names = backbones()
    for name in ("vgg16", "vgg19", "mobilenetv2", "efficientnetb0", "resnet50", "densenet121", "xception",
                 "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert name in names
    shown = ("vgg16", "mobilenetv2", "efficientnetb0", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    sizes = {name: get_backbone(name).image_size for name in shown}
    assert sizes == {"vgg16": 150, "mobilenetv2": 160, "efficientnetb0": 224, "efficientnet_lite0": 224,
                     "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    assert get_backbone("MobileNetV2").name == "mobilenetv2"
    assert get_backbone(None).name == "efficientnet_lite2"  # the most accurate offline (its package is installed)
    assert not get_backbone("efficientnet_lite2").bf16_friendly and get_backbone("vgg16").bf16_friendly


def test_unknown_backbone_lists_names():
    with pytest.raises(UsageError, match="vgg16.*mobilenetv2.*efficientnetb0") as error:
        get_backbone("alexnet")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, module", [("vgg16", "vgg16"), ("resnet50", "resnet50"),
                                          ("mobilenetv2", "mobilenet_v2"), ("densenet121", "densenet"),
                                          ("efficientnetb0", "efficientnet")])
def test_preprocessing_layers_equal_keras_preprocess_input(name: str, module: str, tmp_path: Path):
    images = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, get_backbone(name).preprocess(inputs))
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    expected = importlib.import_module(f"keras.applications.{module}").preprocess_input(images.copy())
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-4)


def test_missing_offline_weights_is_a_one_line_error(tmp_path: Path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with keras_cache(tmp_path / "keras"), pytest.raises(CatsdogsError) as error:
        get_backbone("vgg16").build_base(SIZE, "imagenet")
    message = str(error.value)
    assert "\n" not in message and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "--weights PATH" in message and "$CATSDOGS_WEIGHTS" in message  # not fit's temporary Keras cache
    with pytest.raises(UsageError, match="no such file"):
        get_backbone("vgg16").build_base(SIZE, str(tmp_path / "absent.h5"))


def test_shared_weights_serve_keras_cache_at_every_size(tmp_path: Path):
    shared = offline_weights_dir()
    if shared is None:
        pytest.skip("no shared/weights/keras folder")
    assert cache_names("m_1.0_224_no_top.h5") == [f"m_1.0_{s}_no_top.h5" for s in (96, 128, 160, 192, 224)]
    before = sorted(p.name for p in shared.iterdir())
    with keras_cache(tmp_path / "keras") as models_dir:
        install_weights(shared, models_dir)
        assert (models_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5").exists()
        base = get_backbone("mobilenetv2").build_base(96, "imagenet")
    assert sorted(p.name for p in shared.iterdir()) == before
    file = shared / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    direct = get_backbone("mobilenetv2").build_base(SIZE, file)
    np.testing.assert_array_equal(base.get_layer("Conv1").get_weights()[0], direct.get_layer("Conv1").get_weights()[0])


def test_efficientnet_lite_backbone():
    lite = pytest.importorskip("catsdogs.models.efficientnet_lite")
    for variant in (0, 1, 2):
        assert get_backbone(f"efficientnet_lite{variant}").image_size == lite.default_image_size(variant)
    base = get_backbone("efficientnet_lite0").build_base(64, None)
    assert base.name == "efficientnet_lite0" and base.output_shape[1:3] == (2, 2)


# ---- the three models -----------------------------------------------------------------------------

@pytest.mark.parametrize("run_fixture", ["features_run", "transfer_run", "finetune_run"])
def test_run_is_an_image_to_probability_model(run_fixture: str, data: Path, tmp_path: Path, request):
    run = request.getfixturevalue(run_fixture)
    for name in ("model.keras", "config.json", "history.csv", "curves.png", "classes.json"):
        assert (run / name).stat().st_size > 0, name
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete" and config["backbone"] == "mobilenetv2"
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 1)
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    images = load_split(data, "validation", SIZE).images.astype("float32")
    first, second = model.predict(images, verbose=0), model.predict(images, verbose=0)
    np.testing.assert_array_equal(first, second)  # no augmentation, no dropout at inference
    assert ((0 <= first) & (first <= 1)).all()
    model.save(tmp_path / "again.keras")
    reloaded = keras.models.load_model(tmp_path / "again.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), first, rtol=1e-6, atol=1e-6)


def test_features_cache_is_written_reused_and_invalidated(data: Path, source: Path, tmp_path: Path, monkeypatch,
                                                          features_run: Path):
    assert len(list((features_run / "cache").glob("features-mobilenetv2-32-*.npy"))) == 2
    cache = tmp_path / "cache"
    train(options(data, "features", tmp_path / "first", cache_dir=cache))
    written = sorted(cache.glob("features-*.npy"))
    assert sorted(p.name.rsplit("-", 1)[1] for p in written) == ["train.npy", "validation.npy"]

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(features_module, "extract_features", no_extraction)
    train(options(data, "features", tmp_path / "second", cache_dir=cache))  # reuses the cache
    other = tmp_path / "other-data"
    prepare(source, other, train=22, val=8, test=8)
    with pytest.raises(AssertionError, match="extracted again"):
        train(options(other, "features", tmp_path / "third", cache_dir=cache))
    monkeypatch.undo()
    train(options(other, "features", tmp_path / "fourth", cache_dir=cache))
    assert len(list(cache.glob("features-*.npy"))) == 4


@pytest.mark.parametrize("model", ["features", "transfer"])
def test_a_run_that_trains_its_head_alone_resumes_with_its_optimizer(model: str, data: Path, tmp_path: Path,
                                                                      monkeypatch, recwarn):
    import catsdogs.training as train_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr(train_module, "_finish", crash)
    with pytest.raises(KeyboardInterrupt):
        train(options(data, model, run))
    monkeypatch.undo()
    train(dataclasses.replace(options(data, model, run), epochs=2, resume=True))
    assert [row["epoch"] for row in csv.DictReader(open(run / "history.csv"))] == ["0", "1"]
    keras.models.load_model(run / "model.keras")  # the whole model, saved once after the resumed head
    assert not [w for w in recwarn if "optimizer" in str(w.message)]


def test_features_saves_the_whole_model_once_with_the_best_head(data: Path, tmp_path: Path, monkeypatch):
    import catsdogs.training as train_module

    saved = []
    save = train_module._save_model
    monkeypatch.setattr(train_module, "_save_model", lambda model, path: (saved.append(path.name), save(model, path)))
    run = train(dataclasses.replace(options(data, "features", tmp_path / "run", learning_rate=0.05), epochs=4))
    assert saved.count("model.keras") == 1 and saved.count("part-last.keras") == 4  # one per epoch: the head
    assert_model_keras_is_the_best_epoch(run, data)


def assert_model_keras_is_the_best_epoch(run, data: Path) -> None:
    """RUN/model.keras, run whole by Keras, scores validation as the part trained alone did in its best epoch."""
    best = min(csv.DictReader(open(run.path / "history.csv")), key=lambda row: float(row["val_loss"]))
    validation = load_split(data, "validation", run.model.input_shape[1])
    loss = keras.losses.BinaryCrossentropy()(validation.labels[:, None].astype("float32"),
                                              run.model.predict(validation.images.astype("float32"), verbose=0))
    assert float(loss) == pytest.approx(float(best["val_loss"]), rel=1e-3)


def force_engines(monkeypatch) -> None:
    """Frozen parts run through a verified engine (as `engine="auto"` chooses) even on the tests' few images."""
    from catsdogs.trainers import transfer as transfer_module

    choose = transfer_module.choose_forward
    monkeypatch.setattr(transfer_module, "choose_forward",
                        lambda extractor, first, count, **kw: choose(extractor, first, count, engine_min_images=0,
                                                                     engine="auto"))


def test_transfer_trains_only_the_head(data: Path):
    model = create_model("transfer", backbone="mobilenetv2", image_size=SIZE, weights=None, seed=1)
    before = base_weights(model)
    head = model.get_layer("probability").get_weights()[0]
    split = load_split(data, "train", SIZE)
    model.fit(split.images.astype("float32"), split.labels, epochs=1, batch_size=8, verbose=0)
    after = base_weights(model)
    assert all(np.array_equal(before[path], after[path]) for path in before)
    assert not np.array_equal(head, model.get_layer("probability").get_weights()[0])


def test_transfer_runs_its_frozen_base_through_a_verified_engine(data: Path, tmp_path: Path, monkeypatch):
    """Only the head learns, and the saved whole model is the best epoch's."""
    from catsdogs.trainers import transfer as transfer_module

    force_engines(monkeypatch)
    fit, seen = transfer_module.fit_transfer, {}

    def spy(model, context):
        seen["base"], seen["head"] = base_weights(model), model.get_layer("probability").get_weights()[0]
        return fit(model, context)

    monkeypatch.setattr(transfer_module, "fit_transfer", spy)
    run = train(dataclasses.replace(options(data, "transfer", tmp_path / "run", learning_rate=0.05), epochs=3))
    assert json.loads((run.path / "config.json").read_text())["frozen_part_engine"] in ("onnx", "openvino")
    after = base_weights(run.model)
    assert all(np.array_equal(seen["base"][path], after[path]) for path in after)
    assert not np.array_equal(seen["head"], run.model.get_layer("probability").get_weights()[0])
    assert_model_keras_is_the_best_epoch(run, data)


def test_finetune_runs_the_frozen_bottom_of_its_base_through_a_verified_engine(data: Path, transfer_run: Path,
                                                                               tmp_path: Path, monkeypatch):
    force_engines(monkeypatch)
    transfer = keras.models.load_model(transfer_run / "model.keras")
    run = train(dataclasses.replace(options(data, "finetune", tmp_path / "run", learning_rate=1e-3,
                                            model_options={"from_run": str(transfer_run)}), epochs=2))
    assert json.loads((run.path / "config.json").read_text())["frozen_part_engine"] in ("onnx", "openvino")
    before, after = base_weights(transfer), base_weights(run.model)
    changed = {name for name, i in before if not np.array_equal(before[name, i], after[name, i])}
    assert changed and changed <= {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}
    assert_model_keras_is_the_best_epoch(run, data)


def test_the_split_into_frozen_and_trainable_parts_computes_the_model(data: Path):
    from catsdogs.trainers.transfer import split

    model = create_model("transfer", backbone="mobilenetv2", image_size=SIZE, weights=None, seed=1)
    images = load_split(data, "validation", SIZE).images.astype("float32")
    expected = np.asarray(model(images, training=False))
    for unfreeze in (0, 11):  # the frozen base (the cut is the pooled features), then its last block
        unfreeze_top(model, unfreeze)
        frozen, trainable = split(model)
        np.testing.assert_allclose(np.asarray(trainable(frozen(images))), expected, atol=1e-5)
        assert {w.path for w in trainable.trainable_weights} == {w.path for w in model.trainable_weights}
    names = [layer.name for layer in find_base(model).layers]
    unfreeze_top(model, len(names) - names.index("block_15_project"))  # inside a residual block: no single cut
    assert split(model) is None


def test_under_tf_distribute_the_whole_model_trains_in_keras(data: Path):
    from types import SimpleNamespace

    from catsdogs.trainers.transfer import fit_trainable_part

    calls = []

    class Context:  # what the trainer reads of a FitContext
        distribution = SimpleNamespace(strategy=object())

        def split(self, name: str):
            return load_split(data, name, SIZE)

        def fit(self, model, train, validation, **options):
            calls.append((model, len(train.labels), options))

    model = create_model("transfer", backbone="mobilenetv2", image_size=SIZE, weights=None, seed=1)
    assert fit_trainable_part(model, Context(), epochs=2) is None
    assert calls == [(model, 24, {"epochs": 2})]


def test_augmented_features_cover_each_image_once_per_epoch_reshuffled_and_augmented_afresh():
    from catsdogs.dataset import SplitArrays
    from catsdogs.models.augmentation import augmentation
    from catsdogs.trainers.transfer import AugmentedFeatures

    values = np.arange(20) * 10  # constant images, which the warp and the contrast leave as they are
    flat = np.broadcast_to(values[:, None, None, None], (20, 16, 16, 3)).astype(np.uint8)
    split = SplitArrays(flat, (np.arange(20) % 2).astype(np.int32), [], ["cat", "dog"])
    batches = AugmentedFeatures(split, augmentation(seed=1), lambda b: np.asarray(b).mean(axis=(1, 2)), 8, seed=3)

    def epoch() -> tuple[np.ndarray, np.ndarray]:
        features, labels = zip(*(batches[i] for i in range(len(batches))))
        return np.concatenate(features)[:, 0], np.concatenate(labels)

    first, labels = epoch()
    assert len(batches) == 3 and len(first) == 20
    np.testing.assert_allclose(np.sort(first), values, atol=0.5)
    np.testing.assert_array_equal(labels, np.rint(first / 10) % 2)  # each label goes with its image
    batches.on_epoch_end()
    second, _ = epoch()
    np.testing.assert_allclose(np.sort(second), values, atol=0.5)
    assert not np.array_equal(np.rint(first), np.rint(second)), "a new order every epoch"

    photos = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    identity = AugmentedFeatures(SplitArrays(photos, np.zeros(8, np.int32), [], ["cat", "dog"]), augmentation(seed=1),
                                 lambda b: np.asarray(b), 8, seed=3)
    once = identity[0][0]
    identity.on_epoch_end()
    again = identity[0][0]  # the same 8 photos in the same (sorted) order, warped anew
    assert once.shape == photos.shape and not np.allclose(once, photos) and not np.allclose(once, again)


def test_finetune_changes_only_the_unfrozen_layers(data: Path, transfer_run: Path, tmp_path: Path):
    model = create_model("finetune", from_run=str(transfer_run))
    base = find_base(model)
    unfrozen = {layer.name for layer in base.layers if layer.trainable}
    assert "Conv_1" in unfrozen and "block_16_project" in unfrozen and "block_15_project" not in unfrozen
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in base.layers if layer.trainable)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)
    before = base_weights(model)
    split = load_split(data, "train", SIZE)
    model.fit(split.images.astype("float32"), split.labels, epochs=1, batch_size=8, verbose=0)
    after = base_weights(model)
    changed = {name for name, i in before if not np.array_equal(before[name, i], after[name, i])}
    assert changed and changed <= unfrozen
    assert "Conv_1" in changed


def test_unfreeze_counts_layers_and_keeps_batchnorm_frozen():
    model = create_model("transfer", backbone="mobilenetv2", image_size=SIZE, weights=None)
    assert unfreeze_top(model, 0) == 0 and not find_base(model).trainable_weights
    assert unfreeze_top(model, 4) == 4
    trainable = [layer.name for layer in find_base(model).layers if layer.trainable]
    assert trainable == ["Conv_1", "out_relu"]  # Conv_1_bn stays frozen; block_16_project_BN too


def test_finetune_in_one_run_trains_the_transfer_stage_first_and_resumes(data: Path, tmp_path: Path, monkeypatch):
    import catsdogs.training as train_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(MODELS, "transfer", dataclasses.replace(MODELS["transfer"], default_epochs=1))
    finish = train_module._finish
    monkeypatch.setattr(train_module, "_finish", crash)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # killed after the transfer epoch and one fine-tuning epoch
        train(options(data, "finetune", run))
    monkeypatch.setattr(train_module, "_finish", finish)
    fitted = []
    fit = train_module.FitContext.fit

    def spy(self, model, *args, **kwargs):
        fitted.append((model.name, [layer.name for layer in find_base(model).layers
                                    if layer.trainable and not isinstance(layer, keras.layers.InputLayer)]))
        return fit(self, model, *args, **kwargs)

    monkeypatch.setattr(train_module.FitContext, "fit", spy)
    train(dataclasses.replace(options(data, "finetune", run), epochs=2, resume=True))
    assert fitted[-1] == ("trainable_part", ["block_16_expand", "block_16_expand_relu", "block_16_depthwise",
                                             "block_16_depthwise_relu", "block_16_project", "Conv_1", "out_relu"])
    config = json.loads((run / "config.json").read_text())
    assert config["transfer_epochs"] == 1 and config["epochs"] == 3 and config["epochs_run"] == 3


def test_finetune_refuses_a_foreign_run_and_options_go_to_the_right_model(data: Path, features_run: Path,
                                                                          transfer_run: Path, tmp_path: Path):
    with pytest.raises(UsageError, match="not a completed transfer run"):
        create_model("finetune", from_run=str(features_run))
    with pytest.raises(UsageError, match="differs"):
        create_model("finetune", from_run=str(transfer_run), backbone="vgg16")
    with pytest.raises(UsageError, match="does not take from_run"):
        train(options(data, "transfer", tmp_path / "run", model_options={"from_run": str(transfer_run)}))


def test_transfer_runs_its_frozen_base_in_keras_by_default(data: Path, tmp_path: Path, monkeypatch):
    """engine="keras" (the default): no export, whatever the number of images (memory: ~5 GB less)."""
    from catsdogs.trainers import features

    monkeypatch.setattr(features, "ENGINE_MIN_IMAGES", 0)
    monkeypatch.setattr("catsdogs.engines.fastest_forward", lambda *a: pytest.fail("exported the frozen base"))
    run = train(dataclasses.replace(options(data, "transfer", tmp_path / "run"), epochs=1))
    assert json.loads((run.path / "config.json").read_text())["frozen_part_engine"] == "keras"
