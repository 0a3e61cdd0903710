"""Reading PyTorch's legacy .pth format without torch: files written here in that format, byte for byte."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from learner.errors import BackboneError
from learner.torch_weights import MAGIC_NUMBER, PROTOCOL_VERSION, load_legacy_state_dict, sha256_file, verify_sha256


class _Storage:
    """Stands for a torch storage while pickling: its persistent id is what torch.save writes."""

    def __init__(self, key: str, type_name: str, data: np.ndarray) -> None:
        self.key, self.type_name, self.data = key, type_name, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):  # the same reduction torch.Tensor uses in the legacy format
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def write_legacy(path: Path, state: dict, storages: list[_Storage], monkeypatch: pytest.MonkeyPatch) -> None:
    """Write ``state`` the way torch.save(_use_new_zipfile_serialization=False) does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        storage_types[name] = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, storage_types[name])
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", storage_types[obj.type_name], obj.key, "cpu", obj.data.size, None)
            return None

    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True,
                                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        buffer.write(struct.pack("<q", storage.data.size))
        buffer.write(storage.data.tobytes())
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A small state dict: a permuted-layout conv kernel, a vector sharing a storage at an offset, an int64."""
    hwio = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 2, 3, 2)  # stored (h, w, i, o)
    oihw = hwio.transpose(3, 2, 0, 1)
    shared = np.arange(10, dtype=np.float32) * 0.5
    conv = _Storage("100", "FloatStorage", hwio.ravel())
    vec = _Storage("200", "FloatStorage", shared)
    count = _Storage("300", "LongStorage", np.array([7], dtype=np.int64))
    # element [o, i, h, w] of the kernel sits at o + 2*i + 6*w + 12*h in the (h, w, i, o) buffer
    state = collections.OrderedDict(
        [
            ("conv.weight", _Tensor(conv, 0, (2, 3, 2, 2), (1, 2, 12, 6))),
            ("bn.bias", _Tensor(vec, 4, (3,), (1,))),
            ("bn.weight", _Tensor(vec, 0, (4,), (2,))),
            ("bn.num_batches_tracked", _Tensor(count, 0, (), ())),
        ]
    )
    path = tmp_path / "tiny.pth"
    write_legacy(path, state, [conv, vec, count], monkeypatch)
    expected = {
        "conv.weight": oihw,
        "bn.bias": shared[4:7],
        "bn.weight": shared[0:8:2],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return path, expected


def test_tensors_come_back_with_their_strides_offsets_and_dtypes(weights_file) -> None:
    path, expected = weights_file

    state = load_legacy_state_dict(path)

    assert list(state) == list(expected)
    for name, array in expected.items():
        assert state[name].dtype == array.dtype and state[name].shape == array.shape, name
        np.testing.assert_array_equal(state[name], array)
        assert state[name].flags.c_contiguous


def test_the_sha256_is_checked_before_reading(weights_file) -> None:
    path, _ = weights_file
    load_legacy_state_dict(path, expected_sha256=sha256_file(path))
    with pytest.raises(BackboneError, match="sha256 is .*expected 00"):
        load_legacy_state_dict(path, expected_sha256="00" * 32)


def test_a_single_changed_byte_fails_the_sha256_check(weights_file) -> None:
    path, _ = weights_file
    digest = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackboneError, match="corrupt or not the one juicer knows"):
        verify_sha256(path, digest)


def test_a_truncated_file_is_rejected(weights_file) -> None:
    path, _ = weights_file
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(BackboneError, match="truncated"):
        load_legacy_state_dict(path)


def test_a_pickle_that_wants_other_globals_is_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickle.dump({"weight": Evil()}, buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())

    with pytest.raises(BackboneError, match="refusing"):
        load_legacy_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"PK\x03\x04rest-of-a-zip", "zip serialisation"), (pickle.dumps(12345, protocol=2), "bad magic number"),
     (b"", "not a legacy PyTorch state dict")],
)
def test_files_in_other_formats_are_named_as_such(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(BackboneError, match=message):
        load_legacy_state_dict(path)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="cannot read weights file"):
        load_legacy_state_dict(tmp_path / "nope.pth")
