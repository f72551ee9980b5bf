"""Properties of the noise models (noisysam.noise.labels) over random label vectors, class counts, rates, modes and
seeds, with hypothesis.

Bounds on realised counts are exact binomial quantiles at a two-sided tail of ALPHA = 1e-9: a correct
implementation leaves them with probability below 1e-9 per check. Examples are derandomised by default
(profile "ci": the same examples on every run, so CI cannot flake); HYPOTHESIS_PROFILE=explore draws new ones.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from noisysam.noise import labels as noise
from noisysam.noise.labels import NoisyLabels

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ALPHA = 1e-9


def binomial_range(n: int, p: float, alpha: float = ALPHA) -> tuple[float, float]:
    """[lo, hi] with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2 for X ~ Binomial(n, p)."""
    return binom.ppf(alpha / 2, n, p), binom.isf(alpha / 2, n, p)


@st.composite
def label_vectors(draw, min_classes: int = 2, max_classes: int = 12):
    """(labels, K): n in [1, 600] labels over K classes, some classes possibly absent (from a drawn seed)."""
    k = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, 600))
    present = draw(st.integers(1, k))  # labels drawn from the first `present` classes only
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(0, present, n), k


rates = st.floats(0.0, 1.0)
seeds = st.integers(0, 2**63 - 1)
modes = st.sampled_from(["replace", "flip"])


def counted_transition(clean: np.ndarray, noisy: np.ndarray, k: int) -> np.ndarray:
    """T[i, j] = #(clean = i, noisy = j) / #(clean = i), counted with a loop; identity row for an absent class."""
    T = np.eye(k)
    for i in range(k):
        rows = [s for s in range(clean.size) if clean[s] == i]
        if rows:
            T[i] = [sum(noisy[s] == j for s in rows) / len(rows) for j in range(k)]
    return T


@given(label_vectors(), rates, modes, seeds)
def test_symmetric_realised_rate_lies_within_binomial_bounds(data, rate, mode, seed):
    labels, k = data
    nl = noise.symmetric(labels, rate, k, seed=seed, mode=mode)
    # flip: a selected label always changes, P(noisy) = rate; replace: it is redrawn from all K classes and
    # changes with probability (K - 1)/K, so P(noisy) = rate (K - 1)/K.
    p = rate if mode == "flip" else rate * (k - 1) / k
    lo, hi = binomial_range(labels.size, p)
    assert lo <= nl.is_noisy.sum() <= hi
    assert nl.rate == nl.is_noisy.sum() / labels.size


@given(label_vectors(), rates, modes, seeds)
def test_exact_corrupts_round_rate_n(data, rate, mode, seed):
    labels, k = data
    nl = noise.symmetric(labels, rate, k, seed=seed, mode=mode, exact=True)
    chosen = round(rate * labels.size)
    # flip: every chosen label changes; replace: each is redrawn and changes with probability (K - 1)/K
    lo, hi = (chosen, chosen) if mode == "flip" else binomial_range(chosen, (k - 1) / k)
    assert nl.is_noisy.sum() <= chosen and lo <= nl.is_noisy.sum() <= hi
    assert noise.pairflip(labels, rate, k, seed=seed, exact=True).is_noisy.sum() == chosen


@given(label_vectors(), seeds)
def test_flip_never_keeps_a_label_and_replace_realises_about_r_k_minus_1_over_k(data, seed):
    labels, k = data
    flipped = noise.symmetric(labels, 1.0, k, seed=seed, mode="flip")
    assert flipped.is_noisy.all() and (flipped.noisy != labels).all()
    replaced = noise.symmetric(labels, 1.0, k, seed=seed, mode="replace")
    lo, hi = binomial_range(labels.size, (k - 1) / k)
    assert lo <= replaced.is_noisy.sum() <= hi


@given(label_vectors(), rates, modes, seeds)
def test_realised_transition_is_row_stochastic_and_counts_noisy_given_clean(data, rate, mode, seed):
    labels, k = data
    nl = noise.symmetric(labels, rate, k, seed=seed, mode=mode)
    assert nl.transition.shape == (k, k) and (nl.transition >= 0).all()
    np.testing.assert_allclose(nl.transition.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(nl.transition, counted_transition(nl.clean, nl.noisy, k), rtol=0, atol=1e-12)


@st.composite
def transition_matrices(draw):
    """A random K x K row-stochastic matrix with some zero entries."""
    k = draw(st.integers(2, 6))
    rows = []
    for _ in range(k):
        weights = draw(st.lists(st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0, 3.0]), min_size=k, max_size=k)
                       .filter(lambda w: sum(w) > 0))
        rows.append(np.array(weights) / sum(weights))
    return np.array(rows)


@given(transition_matrices(), st.integers(1, 800), seeds, seeds)
def test_from_transition_draws_noisy_given_clean_from_row_clean(T, n, label_seed, seed):
    k = T.shape[0]
    labels = np.random.default_rng(label_seed % 2**32).integers(0, k, n)
    nl = noise.from_transition(labels, T, seed=seed)
    # #(noisy = j | clean = i) ~ Binomial(n_i, T[i, j]): T is read as P(noisy = j | clean = i), not its transpose.
    for i in range(k):
        n_i = int((labels == i).sum())
        for j in range(k):
            lo, hi = binomial_range(n_i, T[i, j], ALPHA / k**2)
            assert lo <= ((labels == i) & (nl.noisy == j)).sum() <= hi, (i, j)
    assert all(T[c, y] > 0 for c, y in zip(labels, nl.noisy))  # never a zero-probability class


@given(label_vectors(min_classes=10, max_classes=10), rates, seeds)
def test_asymmetric_moves_only_mapped_classes_within_binomial_bounds(data, rate, seed):
    labels, k = data
    mapping = noise.CIFAR10_ASYMMETRIC
    nl = noise.asymmetric(labels, rate, seed=seed, num_classes=k)
    eligible = np.isin(labels, list(mapping))
    assert not nl.is_noisy[~eligible].any()
    assert all(nl.noisy[s] == mapping[labels[s]] for s in np.flatnonzero(nl.is_noisy))
    lo, hi = binomial_range(int(eligible.sum()), rate)
    assert lo <= nl.is_noisy.sum() <= hi


@given(label_vectors(min_classes=100, max_classes=100), rates, seeds, st.sampled_from(["asymmetric",
                                                                                        "asymmetric-superclass"]))
def test_cifar100_asymmetric_moves_every_class_to_its_target_within_binomial_bounds(data, rate, seed, kind):
    labels, k = data
    nl = noise.make(kind, labels, rate, seed=seed, num_classes=k)
    # groups of 5 consecutive classes (Patrini et al.'s code), or the superclass of CIFAR100_COARSE: to the next one
    groups = ([list(range(g, g + 5)) for g in range(0, 100, 5)] if kind == "asymmetric" else
              [[f for f in range(100) if noise.CIFAR100_COARSE[f] == c] for c in range(20)])
    target = {a: group[(i + 1) % 5] for group in groups for i, a in enumerate(group)}
    assert all(nl.noisy[s] == target[labels[s]] for s in np.flatnonzero(nl.is_noisy))
    lo, hi = binomial_range(labels.size, rate)  # every class has a target: each label flips with probability rate
    assert lo <= nl.is_noisy.sum() <= hi


@given(label_vectors(), rates, modes, seeds, st.booleans())
def test_the_same_seed_gives_the_same_labels_and_save_load_round_trips(data, rate, mode, seed, exact):
    labels, k = data
    first = noise.symmetric(labels, rate, k, seed=seed, mode=mode, exact=exact)
    again = noise.symmetric(labels.copy(), rate, k, seed=np.random.default_rng(seed), mode=mode, exact=exact)
    np.testing.assert_array_equal(first.noisy, again.noisy)  # an int seed is default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.npz"
        first.save(path)
        loaded = NoisyLabels.load(path)
    np.testing.assert_array_equal(loaded.noisy, first.noisy)
    np.testing.assert_array_equal(loaded.clean, first.clean)
    assert loaded.num_classes == k and loaded.provenance == first.provenance and loaded.rate == first.rate
    np.testing.assert_array_equal(loaded.transition, first.transition)
