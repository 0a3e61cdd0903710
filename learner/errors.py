"""Errors the learner raises. Callers catch ``LearnerError`` or a branch of it::

    LearnerError
    ├── ImageError              an input image cannot be used (``.source`` names it)
    │   ├── ImageDecodeError    not an image, truncated, or an unsupported format
    │   └── ImageTooLargeError  decodes past the pixel limit (a decompression bomb)
    ├── BackboneError           a backbone cannot be resolved, built, downloaded or loaded
    ├── EmbeddingJobError       a batch embedding job (juicer embed --engine ray) failed on its cluster
    └── DatasetError            a dataset folder, archive or idx file is missing or malformed

A model that is asked to predict before it was fitted raises scikit-learn's ``NotFittedError``.
"""

from __future__ import annotations


class LearnerError(Exception):
    """Base class of every error the learner raises on purpose."""


class ImageError(LearnerError):
    """An input image cannot be used; ``source`` names the file or upload it came from."""

    def __init__(self, message: str, source: str = "<bytes>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class ImageDecodeError(ImageError):
    """The bytes are not an image we can decode (not an image, truncated, unsupported format)."""


class ImageTooLargeError(ImageError):
    """The image decodes to more pixels than allowed (a decompression bomb, or simply too big)."""


class BackboneError(LearnerError):
    """A backbone cannot be resolved, built, downloaded or loaded."""


class EmbeddingJobError(LearnerError):
    """A batch embedding job failed on its cluster (the shards it wrote are kept: a re-run resumes)."""


class DatasetError(LearnerError):
    """A dataset folder, archive or idx file is missing or malformed."""
