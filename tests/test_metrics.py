"""Metrics against hand-worked examples and an independent pairwise AUROC."""

import itertools
import math

import numpy as np
import pytest
import torch

from noisysam.run.metrics import accuracy, memorisation_recovery, noise_auroc


def test_accuracy_hand_example_numpy_and_torch():
    pred, target = [0, 1, 2, 2, 1], [0, 1, 1, 2, 0]  # 3 of 5 right
    assert accuracy(np.array(pred), np.array(target)) == pytest.approx(0.6)
    assert accuracy(torch.tensor(pred), torch.tensor(target)) == pytest.approx(0.6)
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])


def test_memorisation_recovery_hand_example():
    clean = [0, 1, 2, 3, 4, 5]
    noisy = [0, 1, 3, 4, 5, 0]  # samples 2..5 corrupted
    pred = [0, 9, 3, 3, 1, 0]
    # sample 1 is wrong but clean: ignored. Corrupted: 2 -> noisy (3), 3 -> clean (3),
    # 4 -> neither (1), 5 -> noisy (0). Memorised 2/4, recovered 1/4.
    mem, rec = memorisation_recovery(torch.tensor(pred), np.array(noisy), clean)
    assert (mem, rec) == (pytest.approx(0.5), pytest.approx(0.25))


def test_memorisation_recovery_without_corruption_is_nan():
    mem, rec = memorisation_recovery([0, 1], [0, 1], [0, 1])
    assert math.isnan(mem) and math.isnan(rec)


def pairwise_auroc(loss, is_noisy):
    """P(loss of a noisy sample > loss of a clean one) + 0.5 P(tie), counted over all pairs."""
    noisy = [l for l, n in zip(loss, is_noisy) if n]
    clean = [l for l, n in zip(loss, is_noisy) if not n]
    score = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(noisy, clean))
    return score / (len(noisy) * len(clean))


def test_noise_auroc_hand_example():
    loss = [0.1, 0.5, 0.3, 0.9, 0.3]
    is_noisy = [0, 1, 0, 1, 1]
    # noisy {0.5, 0.9, 0.3} vs clean {0.1, 0.3}: 5 wins and one tie (0.3 vs 0.3) over 6 pairs.
    assert noise_auroc(loss, is_noisy) == pytest.approx(5.5 / 6)
    assert noise_auroc(torch.tensor(loss, dtype=torch.bfloat16), torch.tensor(is_noisy).bool()) == pytest.approx(5.5 / 6)


def test_noise_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    is_noisy = rng.random(200) < 0.3
    loss = np.round(rng.exponential(1.0, 200) + 0.7 * is_noisy, 1)  # rounding makes ties
    assert noise_auroc(loss, is_noisy) == pytest.approx(pairwise_auroc(loss.tolist(), is_noisy.tolist()))
    assert noise_auroc(-loss, is_noisy) == pytest.approx(1 - pairwise_auroc(loss.tolist(), is_noisy.tolist()))


def test_noise_auroc_single_class_is_nan():
    assert math.isnan(noise_auroc([0.1, 0.2], [0, 0]))
    assert math.isnan(noise_auroc([0.1, 0.2], [True, True]))


def test_inputs_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D"):
        accuracy(np.zeros((2, 2)), np.zeros((2, 2)))
