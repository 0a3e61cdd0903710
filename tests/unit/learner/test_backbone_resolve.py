"""Resolving backbone names, URLs and SavedModel folders to specs (no TensorFlow needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner.backbones import INCEPTION_V3_URL, ensure_backbone, resolve_backbone
from learner.efficientnet_lite import SIDECAR_NAME
from learner.errors import BackboneError


def fake_saved_model(folder: Path, sidecar: dict | None = None, variables: bytes = b"weights") -> Path:
    """A folder shaped like a SavedModel (resolution only looks at files, never loads them)."""
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(variables)
    if sidecar is not None:
        (folder / SIDECAR_NAME).write_text(json.dumps(sidecar))
    return folder


SIDECAR = {"name": "my-net", "input_size": [240, 240], "weights": {"sha256": "ab" * 32}, "converter_version": 1}


def test_a_folder_with_a_sidecar_carries_its_input_size(tmp_path: Path) -> None:
    folder = fake_saved_model(tmp_path / "net", SIDECAR)

    spec = resolve_backbone(str(folder), tmp_path / "data")

    assert spec.name == "my-net"
    assert spec.input_size == (240, 240)
    assert spec.handle == str(folder.resolve())
    assert not spec.is_remote


def test_the_id_follows_the_weights_and_the_input_size(tmp_path: Path) -> None:
    base = resolve_backbone(str(fake_saved_model(tmp_path / "a", SIDECAR)), tmp_path)
    same = resolve_backbone(str(fake_saved_model(tmp_path / "b", SIDECAR)), tmp_path)
    other_weights = resolve_backbone(
        str(fake_saved_model(tmp_path / "c", {**SIDECAR, "weights": {"sha256": "cd" * 32}})), tmp_path
    )
    other_converter = resolve_backbone(str(fake_saved_model(tmp_path / "d", {**SIDECAR, "converter_version": 2})), tmp_path)
    resized = resolve_backbone(str(tmp_path / "a"), tmp_path, input_size=300)

    assert base.id == same.id
    assert len({base.id, other_weights.id, other_converter.id, resized.id}) == 4
    assert resized.input_size == (300, 300)


def test_a_folder_without_a_sidecar_needs_an_input_size(tmp_path: Path) -> None:
    folder = fake_saved_model(tmp_path / "plain")
    with pytest.raises(BackboneError, match="input size"):
        resolve_backbone(str(folder), tmp_path)

    spec = resolve_backbone(str(folder), tmp_path, input_size=128)

    assert spec.input_size == (128, 128) and spec.name == "plain"


def test_without_a_sidecar_the_id_fingerprints_the_variables(tmp_path: Path) -> None:
    one = resolve_backbone(str(fake_saved_model(tmp_path / "x" / "net", variables=b"v1")), tmp_path, input_size=64)
    two = resolve_backbone(str(fake_saved_model(tmp_path / "y" / "net", variables=b"v2")), tmp_path, input_size=64)
    assert one.id != two.id


def test_a_folder_that_is_not_a_saved_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no saved_model.pb"):
        resolve_backbone(str(tmp_path / "empty"), tmp_path, input_size=224)


def test_inception_v3_is_the_studys_tf_hub_url_at_299() -> None:
    spec = resolve_backbone("inception-v3", Path("/nonexistent"))
    assert spec.handle == INCEPTION_V3_URL and spec.input_size == (299, 299) and spec.is_remote


def test_a_url_with_an_input_size_resolves_without_the_network(tmp_path: Path) -> None:
    spec = resolve_backbone("http://127.0.0.1:9/models/net", tmp_path, input_size=192)
    assert spec.input_size == (192, 192) and spec.handle == "http://127.0.0.1:9/models/net"
    assert spec.id != resolve_backbone("http://127.0.0.1:9/models/net", tmp_path, input_size=224).id


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="efficientnet-lite0.*inception-v3"):
        resolve_backbone("resnet-9000", tmp_path)


def test_a_built_backbone_in_the_data_folder_is_reused(tmp_path: Path) -> None:
    sidecar = {"name": "efficientnet-lite0", "input_size": [224, 224], "weights": {"sha256": "57" * 32}}
    folder = fake_saved_model(tmp_path / "backbones" / "efficientnet-lite0", sidecar)

    spec = resolve_backbone("efficientnet-lite0", tmp_path)

    assert spec.handle == str(folder.resolve()) and spec.input_size == (224, 224)
    assert ensure_backbone("efficientnet-lite0", tmp_path) == (folder, False)


def test_a_half_built_backbone_folder_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "backbones" / "efficientnet-lite1"
    folder.mkdir(parents=True)
    (folder / "junk").write_text("x")
    with pytest.raises(BackboneError, match="incomplete"):
        ensure_backbone("efficientnet-lite1", tmp_path)


def test_only_known_variants_can_be_built(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="buildable"):
        ensure_backbone("inception-v3", tmp_path)
