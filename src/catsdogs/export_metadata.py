"""Text metadata (string keys and values) carried inside an exported model file, and read back.

- ONNX: the model's ``metadata_props`` (ONNX Runtime: ``session.get_modelmeta().custom_metadata_map``).
- TFLite: one entry of the flatbuffer's ``metadata`` list, named ``catsdogs``, whose buffer is the UTF-8 JSON of
  the mapping (TFLite's own tools ignore entries they do not know; the graph is unchanged).
- SavedModel: ``assets.extra/catsdogs.json`` inside the folder (the place TensorFlow Serving leaves to users).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

TFLITE_NAME = "catsdogs"
SAVEDMODEL_FILE = Path("assets.extra") / "catsdogs.json"


def embed_metadata(fmt: str, path: Path, metadata: Mapping[str, str]) -> None:
    """Add `metadata` to the export at `path` (in place)."""
    path = Path(path)
    metadata = {str(k): str(v) for k, v in metadata.items()}
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        kept = [p for p in proto.metadata_props if p.key not in metadata]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept + [onnx.StringStringEntryProto(key=k, value=v) for k, v in metadata.items()])
        onnx.save(proto, str(path))
    elif fmt == "tflite":
        path.write_bytes(_tflite_with_metadata(path.read_bytes(), json.dumps(metadata).encode()))
    else:
        (path / SAVEDMODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
        (path / SAVEDMODEL_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def read_metadata(fmt: str, path: Path) -> dict[str, str]:
    """The metadata `embed_metadata` put in an export ({} when there is none)."""
    path = Path(path)
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if fmt == "tflite":
        from tensorflow.lite.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(str(path))
        for entry in model.metadata or []:
            if _text(entry.name) == TFLITE_NAME:
                return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
        return {}
    source = path / SAVEDMODEL_FILE
    return json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}


def _tflite_with_metadata(flatbuffer: bytes, payload: bytes) -> bytes:
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != TFLITE_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _text(name) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
