"""Every private Keras API the package relies on, in one place (tests/test_compat.py tests each one).

Keras 3 has no public way to do these; a Keras upgrade that moves one fails in test_compat first:
- the weights cache: where Keras keeps downloads (`keras.src.backend.config.keras_home`, `_KERAS_DIR`);
- a functional graph's nodes (`_functional`, `_nodes_by_depth`, `_inbound_nodes`, `_keras_history`), which
  Grad-CAM (`explain`) and the embeddings model (`novelty`) follow;
- the callbacks' internals: `ModelCheckpoint._get_file_path` / `_should_save_model` (and its `_save_model`
  hook, overridden in `training`), `EarlyStopping._set_monitor_op` / `_is_improvement`;
- a model's layers, nested models flattened (`_flatten_layers`), which `bench` counts FLOPs over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHECKPOINT_SAVE_HOOK = "_save_model"  # the method of ModelCheckpoint that writes the file: (epoch, batch, logs)


def keras_home() -> str | None:
    """The home folder Keras resolved at import (~/.keras, or /tmp/.keras when that is not writable); None
    when this Keras has no such function."""
    try:
        from keras.src.backend.config import keras_home as resolved
    except ImportError:
        return None
    return resolved()


@contextmanager
def keras_dir_set_to(home: str) -> Iterator[None]:
    """Inside the block, Keras' already-read home folder (its cache of weights downloads) is `home`."""
    from keras.src.backend import config

    saved, config._KERAS_DIR = config._KERAS_DIR, home
    try:
        yield
    finally:
        config._KERAS_DIR = saved


def functional_graph(model: Any) -> Any:
    """The functional graph of `model` (a built Sequential keeps one in `_functional`)."""
    return getattr(model, "_functional", None) or model


def graph_nodes(model: Any) -> set | None:
    """The nodes of `model`'s own graph; None for a model without one (a subclassed model)."""
    by_depth = getattr(functional_graph(model), "_nodes_by_depth", None)
    return None if by_depth is None else {node for group in by_depth.values() for node in group}


def inbound_nodes(layer: Any) -> list:
    """The nodes where `layer` is called, in every graph it belongs to."""
    return list(layer._inbound_nodes)


def output_input(tensor: Any) -> tuple[Any, Any]:
    """(the layer that made the symbolic `tensor`, the tensor that layer was called on in this graph)."""
    layer, node_index, _ = tensor._keras_history
    return layer, layer._inbound_nodes[node_index].input_tensors[0]


def flat_layers(model: Any) -> list:
    """Every layer of `model`, nested models' layers included (the nested models too), `model` excluded."""
    return list(model._flatten_layers(include_self=False))


def checkpoint_target(callback: Any, epoch: int, batch: int | None, logs: dict | None) -> str | None:
    """The file a Keras `ModelCheckpoint` saves to now (its `save_best_only` and `save_freq` rules), or None."""
    filepath = callback._get_file_path(epoch, batch, logs)
    return filepath if callback._should_save_model(epoch, batch, logs, filepath) else None


def is_improvement(callback: Any, value: float, best: float) -> bool:
    """Whether a Keras `EarlyStopping` counts `value` as better than `best` (its monitor's mode and min_delta)."""
    if callback.monitor_op is None:
        callback._set_monitor_op()
    return bool(callback._is_improvement(value, best))
