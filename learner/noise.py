"""Simulated annotators who make mistakes: random ones, and the pre-selected guess accepted when it is wrong.

For ``juicer simulate`` (offline, :mod:`learner.offline`, and through Label Studio, :mod:`simulate.driver`):
perfect annotators measure nothing about label noise, so a :class:`NoisyAnnotator` answers wrongly with
probability ``noise``. A wrong answer is the pre-selected guess with probability ``accept_guess`` when the task
shows a guess and that guess is wrong (automation bias: a tired annotator keeps what was pre-selected), otherwise
a wrong class drawn uniformly. So the error rate is ``noise`` whatever ``accept_guess`` is; ``accept_guess``
decides how many of the errors agree with the model (the errors a model-based check finds hardest). A task
with no guess (a holdout task, a second look) gets a uniformly drawn wrong class when the annotator errs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NoisyAnnotator:
    """One simulated person: ``answer(true, guess)`` gives the label they submit (class indices or names)."""

    noise: float = 0.0
    accept_guess: float = 0.0
    seed: int | Sequence[int] = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("noise", "accept_guess"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        self.rng = np.random.default_rng(self.seed)

    @property
    def perfect(self) -> bool:
        return self.noise == 0.0

    def answer(self, true: Hashable, guess: Hashable | None, classes: Sequence[Hashable]) -> Hashable:
        """The label submitted for an item of class ``true`` shown with ``guess`` pre-selected (None: no guess)."""
        if self.noise == 0.0 or self.rng.random() >= self.noise:
            return true
        wrong = [c for c in classes if c != true]
        if not wrong:
            return true
        if guess is not None and guess != true and guess in wrong and self.rng.random() < self.accept_guess:
            return guess
        return wrong[int(self.rng.integers(len(wrong)))]

    def answers(self, true: np.ndarray, guesses: np.ndarray | None, n_classes: int) -> np.ndarray:
        """Vectorised :meth:`answer` on class indices; ``guesses`` -1 (or None for all) where no guess is shown."""
        true = np.asarray(true, dtype=np.int64)
        out = true.copy()
        if self.noise == 0.0 or n_classes < 2 or not len(true):
            return out
        guesses = np.full(len(true), -1, np.int64) if guesses is None else np.asarray(guesses, dtype=np.int64)
        wrong = self.rng.random(len(true)) < self.noise
        take_guess = wrong & (guesses >= 0) & (guesses != true) & (self.rng.random(len(true)) < self.accept_guess)
        # A uniform wrong class: true + 1 .. true + n_classes - 1 (mod n_classes).
        shift = self.rng.integers(1, n_classes, size=len(true))
        out[wrong] = (true[wrong] + shift[wrong]) % n_classes
        out[take_guess] = guesses[take_guess]
        return out
