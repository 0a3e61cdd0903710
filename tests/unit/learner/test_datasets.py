"""Datasets: the Dataset container, the folder-per-class loader, and the idx reader on small hand-made files."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from PIL import Image

from learner.datasets import FASHION_MNIST_CLASSES, Dataset, load_dataset, load_fashion_mnist, load_folder
from learner.errors import DatasetError, ImageTooLargeError
from learner.images import ArrayImage, FileImage


def write_image(path, colour, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, fmt)
    path.write_bytes(buffer.getvalue())


@pytest.fixture
def flowers_like(tmp_path):
    """root/<class>/<image> with the clutter real folders have."""
    root = tmp_path / "flower_photos"
    write_image(root / "tulips" / "b.jpg", (200, 0, 0))
    write_image(root / "tulips" / "a.jpg", (210, 0, 0))
    write_image(root / "tulips" / "nested" / "c.png", (220, 0, 0), "PNG")
    write_image(root / "daisy" / "1.png", (255, 255, 255), "PNG")
    write_image(root / "daisy" / "2.webp-named-oddly.bin", (250, 250, 250), "WEBP")  # image by content
    (root / "daisy" / "notes.txt").write_text("not an image")
    (root / "daisy" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "LICENSE.txt").write_text("CC-BY")
    (root / "empty_class").mkdir()
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.jpg", (0, 0, 0))
    return root


def test_load_folder_reads_classes_sorted_and_skips_non_images(flowers_like):
    dataset = load_folder(flowers_like)
    assert dataset.name == "flower_photos"
    assert dataset.class_names == ["daisy", "tulips"]  # sorted; the empty and hidden folders are not classes
    assert dataset.item_ids == [
        "daisy/1.png",
        "daisy/2.webp-named-oddly.bin",
        "tulips/a.jpg",
        "tulips/b.jpg",
        "tulips/nested/c.png",
    ]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1]
    assert dataset.class_counts() == {"daisy": 2, "tulips": 3}
    assert all(isinstance(source, FileImage) for source in dataset.sources)
    red = dataset.sources[2].pixels((4, 4))
    assert red[2, 2, 0] > 0.7 and red[2, 2, 1] < 0.1


def test_load_folder_passes_the_pixel_limit_on(flowers_like):
    dataset = load_folder(flowers_like, max_pixels=10)
    with pytest.raises(ImageTooLargeError, match="above the limit of 10"):
        dataset.sources[0].pixels((4, 4))


def test_load_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        load_folder(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "readme.md").write_text("# cats")
    with pytest.raises(DatasetError, match="no JPEG, PNG, GIF or WebP images"):
        load_folder(tmp_path)


def make_dataset(labels, class_names=("a", "b", "c")):
    sources = [ArrayImage(np.full((2, 2), i, np.uint8), f"item{i}") for i in range(len(labels))]
    return Dataset("toy", list(class_names), sources, np.array(labels), [f"item{i}" for i in range(len(labels))])


def test_dataset_subset_and_counts():
    dataset = make_dataset([0, 1, 1, 2, 0])
    assert len(dataset) == 5 and dataset.n_classes == 3
    assert dataset.class_counts() == {"a": 2, "b": 2, "c": 1}
    part = dataset.subset([4, 1])
    assert part.item_ids == ["item4", "item1"] and part.labels.tolist() == [0, 1]
    assert part.sources[0] is dataset.sources[4]
    assert part.class_counts() == {"a": 1, "b": 1, "c": 0}
    assert part.label_names == ["a", "b"]
    assert "toy: 2 images, 3 classes" in part.describe()
    with pytest.raises(IndexError):
        dataset.subset([5])


def test_dataset_rejects_inconsistent_parts():
    with pytest.raises(DatasetError, match="same length"):
        Dataset("bad", ["a"], [ArrayImage(np.zeros((2, 2), np.uint8), "x")], np.array([0, 0]), ["x"])
    with pytest.raises(DatasetError, match="index"):
        make_dataset([0, 3])
    with pytest.raises(DatasetError, match="unique"):
        Dataset("dup", ["a"], [ArrayImage(np.zeros((2, 2), np.uint8), "x")] * 2, np.array([0, 0]), ["x", "x"])


# ---------------------------------------------------------------------------------------------- idx files


def write_idx(path, array, magic):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_idx(tmp_path):
    """A miniature Fashion-MNIST: 30 train and 10 t10k 28x28 images; each image's pixels hold its index."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("t10k", 10)):
        offset = 0 if split == "train" else 30
        images = np.stack([np.full((28, 28), offset + i, np.uint8) for i in range(n)])
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images, 0x803)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels, 0x801)
    return tmp_path


def test_fashion_mnist_pools_train_and_test(small_idx):
    dataset = load_fashion_mnist(small_idx)
    assert len(dataset) == 40 and dataset.class_names == list(FASHION_MNIST_CLASSES)
    assert dataset.item_ids[0] == "fashion-mnist/train/00000" and dataset.item_ids[30] == "fashion-mnist/t10k/00000"
    assert dataset.sources[31].source == "fashion-mnist/t10k/00001"
    assert dataset.sources[31].pixels((28, 28))[0, 0, 0] == pytest.approx(31 / 255)
    assert set(dataset.class_counts().values()) == {4}


def test_fashion_mnist_per_class_limit_is_reproducible(small_idx):
    first = load_fashion_mnist(small_idx, per_class_limit=2, seed=7)
    again = load_fashion_mnist(small_idx, per_class_limit=2, seed=7)
    other = load_fashion_mnist(small_idx, per_class_limit=2, seed=8)
    assert len(first) == 20 and set(first.class_counts().values()) == {2}
    assert first.item_ids == again.item_ids
    assert first.item_ids != other.item_ids
    assert first.item_ids == sorted(first.item_ids, key=lambda i: (i.split("/")[1] != "train", i))
    with pytest.raises(DatasetError):
        load_fashion_mnist(small_idx, per_class_limit=0)


def test_fashion_mnist_rejects_bad_idx_files(small_idx):
    write_idx(small_idx / "t10k-labels-idx1-ubyte.gz", np.zeros(10), 0x803)  # an images magic on a labels file
    with pytest.raises(DatasetError, match="magic"):
        load_fashion_mnist(small_idx)
    write_idx(small_idx / "t10k-labels-idx1-ubyte.gz", np.zeros(9), 0x801)
    with pytest.raises(DatasetError, match="10 images but 9 labels"):
        load_fashion_mnist(small_idx)
    with gzip.open(small_idx / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">II", 0x801, 10) + bytes(5))  # header promises more than is there
    with pytest.raises(DatasetError, match="promises"):
        load_fashion_mnist(small_idx)
    (small_idx / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read"):
        load_fashion_mnist(small_idx)


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_limit_per_class_is_seeded_and_keeps_order():
    dataset = make_dataset([0, 1, 0, 2, 0, 1, 0, 1])
    limited = dataset.limit_per_class(2, seed=5)
    assert limited.class_counts() == {"a": 2, "b": 2, "c": 1}
    assert limited.item_ids == dataset.limit_per_class(2, seed=5).item_ids
    assert limited.item_ids == sorted(limited.item_ids, key=lambda i: int(i[4:]))
    assert len({tuple(dataset.limit_per_class(1, seed=s).item_ids) for s in range(20)}) > 1  # seeds matter
    with pytest.raises(DatasetError):
        dataset.limit_per_class(0)


def test_load_dataset_dispatches_on_the_name(flowers_like, small_idx):
    assert load_dataset("fashion-mnist", fashion_mnist_dir=small_idx, per_class_limit=1).class_counts() == {
        name: 1 for name in FASHION_MNIST_CLASSES
    }
    folder = load_dataset(flowers_like, fashion_mnist_dir=small_idx, per_class_limit=1, seed=0)
    assert folder.class_counts() == {"daisy": 1, "tulips": 1}
