"""Simulated annotators' mistakes: error rates within binomial noise, and the wrong guess accepted."""

import numpy as np
import pytest

from learner.noise import NoisyAnnotator

N = 4000


def within(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    """``count`` successes of ``n`` is within ``sds`` binomial standard deviations of ``n * p``."""
    return abs(count - n * p) <= sds * np.sqrt(n * p * (1 - p))


def test_a_perfect_annotator_is_always_right():
    annotator = NoisyAnnotator()
    assert annotator.perfect
    assert all(annotator.answer(c, "x", ["x", "y", "z"]) == c for c in ["x", "y", "z"] * 50)


@pytest.mark.parametrize("noise", [0.05, 0.1, 0.3])
def test_the_error_rate_is_the_noise_rate_and_errors_are_uniform_over_wrong_classes(noise):
    annotator = NoisyAnnotator(noise, seed=1)
    classes = list(range(5))
    true = np.arange(N) % 5
    given = np.array([annotator.answer(int(t), None, classes) for t in true])
    wrong = given != true
    assert within(int(wrong.sum()), N, noise)
    # a wrong answer is one of the 4 other classes, each about equally often
    shift = (given[wrong] - true[wrong]) % 5
    assert set(shift.tolist()) <= {1, 2, 3, 4}
    for k in (1, 2, 3, 4):
        assert within(int((shift == k).sum()), int(wrong.sum()), 0.25)


def test_a_wrong_annotator_takes_a_wrong_guess_at_the_accept_rate():
    annotator = NoisyAnnotator(0.2, accept_guess=0.5, seed=2)
    classes = list(range(10))
    true = np.arange(N) % 10
    guess = (true + 3) % 10  # every guess wrong
    given = np.array([annotator.answer(int(t), int(g), classes) for t, g in zip(true, guess)])
    wrong = given != true
    assert within(int(wrong.sum()), N, 0.2)
    # half the errors take the guess, the other half a uniform wrong class (1 in 9 of which is the guess too)
    took = int((given[wrong] == guess[wrong]).sum())
    assert within(took, int(wrong.sum()), 0.5 + 0.5 / 9)


def test_a_right_guess_does_not_turn_an_error_into_a_right_answer():
    annotator = NoisyAnnotator(0.25, accept_guess=1.0, seed=3)
    given = np.array([annotator.answer(0, 0, [0, 1, 2]) for _ in range(N)])
    assert within(int((given != 0).sum()), N, 0.25)


def test_the_vectorised_answers_match_the_rates():
    annotator = NoisyAnnotator(0.1, accept_guess=1.0, seed=4)
    true = np.arange(N) % 10
    guesses = np.where(np.arange(N) % 2 == 0, (true + 1) % 10, -1)  # half the tasks show a wrong guess
    given = annotator.answers(true, guesses, 10)
    wrong = given != true
    assert within(int(wrong.sum()), N, 0.1)
    shown = guesses >= 0
    assert np.all(given[wrong & shown] == guesses[wrong & shown])  # accept 1.0: every error on a guess takes it
    assert within(int((given[wrong & ~shown] == (true[wrong & ~shown] + 1) % 10).sum()), int((wrong & ~shown).sum()), 1 / 9)
    assert np.array_equal(NoisyAnnotator(0.0).answers(true, guesses, 10), true)


def test_rates_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match="noise"):
        NoisyAnnotator(1.5)
    with pytest.raises(ValueError, match="accept_guess"):
        NoisyAnnotator(0.1, accept_guess=-0.1)
