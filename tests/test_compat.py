"""One test per private Keras API in `catsdogs.compat`: a Keras upgrade that moves one fails here, loudly."""

from __future__ import annotations

import os

import keras
import numpy as np

from catsdogs import compat


def small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="inner_dense")], name="head")
    return keras.Model(inputs, inner(pooled), name="small")


def test_keras_home_and_its_cache_folder_can_be_moved(tmp_path):
    from keras.src.backend import config

    home = compat.keras_home()
    assert home and os.path.isabs(home) and config._KERAS_DIR == home
    with compat.keras_dir_set_to(str(tmp_path)):
        assert config._KERAS_DIR == str(tmp_path)
        assert keras.utils.get_file.__module__.startswith("keras")  # the downloader that reads it
    assert config._KERAS_DIR == home


def test_graph_nodes_inbound_nodes_and_keras_history():
    model = small_model()
    nodes = compat.graph_nodes(model)
    conv = model.get_layer("conv")
    assert nodes and [node for node in compat.inbound_nodes(conv) if node in nodes]
    sequential = model.get_layer("head")
    assert compat.functional_graph(sequential) is not sequential and compat.graph_nodes(sequential)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert compat.graph_nodes(Subclassed()) is None
    last, called_on = compat.output_input(model.outputs[0])
    assert last is sequential and tuple(called_on.shape) == (None, 4)


def test_flat_layers_include_nested_models_layers():
    names = [layer.name for layer in compat.flat_layers(small_model())]
    assert "conv" in names and "inner_dense" in names and "small" not in names


def test_checkpoint_target_and_its_save_hook(tmp_path):
    assert callable(getattr(keras.callbacks.ModelCheckpoint, compat.CHECKPOINT_SAVE_HOOK))
    saved = []

    class Recording(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            saved.append(compat.checkpoint_target(self, epoch, batch, logs))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    callback = Recording(str(tmp_path / "epoch-{epoch}.keras"), monitor="loss", save_best_only=False)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert saved == [str(tmp_path / "epoch-1.keras"), str(tmp_path / "epoch-2.keras")]
    best_only = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=True)
    best_only.set_model(model)
    best_only.on_epoch_end(0, {"loss": 1.0})  # Keras sets its monitor up, then saves the first epoch
    assert (tmp_path / "best.keras").is_file()
    assert compat.checkpoint_target(best_only, 1, None, {"loss": 2.0}) is None  # not better: not saved
    assert compat.checkpoint_target(best_only, 2, None, {"loss": 0.5}) == str(tmp_path / "best.keras")


def test_early_stopping_improvement_follows_mode_and_min_delta():
    lower = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0.1)
    assert compat.is_improvement(lower, 0.5, 1.0) and not compat.is_improvement(lower, 0.95, 1.0)
    higher = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max")
    assert compat.is_improvement(higher, 0.9, 0.8) and not compat.is_improvement(higher, 0.7, 0.8)


def test_best_checkpoint_keeps_a_tied_accuracy_with_lower_loss_as_the_history_reads(tmp_path):
    from catsdogs.run_files import best_row
    from catsdogs.training import AtomicModelCheckpoint

    checkpoint = AtomicModelCheckpoint(tmp_path / "best.keras", monitor="val_accuracy", mode="max",
                                       save_best_only=True)
    checkpoint.set_model(small_model())
    rows = [{"epoch": 0, "val_accuracy": 0.9, "val_loss": 0.5}, {"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.3},
            {"epoch": 2, "val_accuracy": 0.9, "val_loss": 0.4}, {"epoch": 3, "val_accuracy": 0.8, "val_loss": 0.1}]
    saved = []
    for row in rows:
        (tmp_path / "best.keras").unlink(missing_ok=True)
        checkpoint.on_epoch_end(row["epoch"], {key: value for key, value in row.items() if key != "epoch"})
        saved.append((tmp_path / "best.keras").exists())
    assert saved == [True, True, False, False]  # the tie with a lower loss, not the one with a higher
    assert best_row(rows, "val_accuracy")["epoch"] == 1 and best_row(rows, "val_loss")["epoch"] == 3
    assert best_row([{"epoch": 0, "val_accuracy": 0.9}, {"epoch": 1, "val_accuracy": 0.9}], "val_accuracy")["epoch"] == 0
