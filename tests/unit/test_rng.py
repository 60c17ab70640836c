"""Counter-based random numbers: exact hash arithmetic, keep rates, independence, permutations."""

import pytest
import torch
from scipy import stats

from l2reg import rng


def lowbias32_reference(x: int) -> int:
    """The published lowbias32, with Python's unbounded integers and an explicit mod 2**32."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2**32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2**32
    return x ^ (x >> 16)


def test_hash32_matches_the_reference_on_tensors_and_ints():
    values = [0, 1, 2, 12345, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 0xDEADBEEF]
    expected = [lowbias32_reference(v) for v in values]
    assert [rng.hash32(v) for v in values] == expected
    assert rng.hash32(torch.tensor(values, dtype=torch.int64)).tolist() == expected
    assert expected[1] != expected[2] and all(0 <= e <= rng.MASK32 for e in expected)


def test_run_keys_differ_between_seeds_and_streams():
    keys = {rng.run_key(seed, stream) for seed in range(1000) for stream in range(4)}
    assert len(keys) == 4000
    assert rng.run_key(7, 2) == rng.run_key(7, 2)
    with pytest.raises(ValueError, match="stream"):
        rng.run_key(0, 16)


def test_dropout_masks_keep_the_right_fraction_with_inverted_scaling():
    keys = rng.keys_tensor(list(range(64)), 2, "cpu")
    masks = rng.dropout_masks(keys, step=3, shape=(128, 64), keep=0.5, dtype=torch.float32)
    assert masks.shape == (64, 128, 64) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 2.0}
    kept = (masks > 0).double().mean().item()
    assert kept == pytest.approx(0.5, abs=4 * 0.5 / (masks.numel() ** 0.5))  # 4 standard errors
    three_quarters = rng.dropout_masks(keys, 3, (128, 64), 0.75, torch.float64)
    assert three_quarters.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert (three_quarters > 0).double().mean().item() == pytest.approx(0.75, abs=0.003)


def test_masks_are_uncorrelated_between_runs_steps_and_units():
    keys = rng.keys_tensor([0, 1], 2, "cpu")
    steps = torch.stack([rng.dropout_masks(keys, s, (128, 64), 0.5, torch.float64) for s in range(50)])
    run0, run1 = steps[:, 0].flatten(), steps[:, 1].flatten()  # 409 600 draws each
    bound = 5 / run0.numel() ** 0.5  # 5 standard errors of a correlation of independent draws
    assert abs(torch.corrcoef(torch.stack([run0, run1]))[0, 1]) < bound
    next_step = torch.corrcoef(torch.stack([steps[:-1, 0].flatten(), steps[1:, 0].flatten()]))[0, 1]
    assert abs(next_step) < bound
    next_unit = torch.corrcoef(torch.stack([steps[:, 0, :, :-1].flatten(), steps[:, 0, :, 1:].flatten()]))[0, 1]
    assert abs(next_unit) < bound


def test_a_runs_masks_depend_only_on_its_own_key():
    keys = rng.keys_tensor([5, 9, 11], 2, "cpu")
    together = rng.dropout_masks(keys, 10, (32, 64), 0.5, torch.float32)
    alone = rng.dropout_masks(keys[[2]], 10, (32, 64), 0.5, torch.float32)
    reordered = rng.dropout_masks(keys[[2, 0]], 10, (32, 64), 0.5, torch.float32)
    assert torch.equal(alone[0], together[2]) and torch.equal(reordered[1], together[0])
    partial = rng.dropout_masks(keys, 10, (7, 64), 0.5, torch.float32)
    assert torch.equal(partial, together[:, :7])  # a last, partial batch: leading rows of a full one
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(together, rng.dropout_masks(keys, 11, (32, 64), 0.5, torch.float32))


def test_permutations_are_permutations_differing_by_run_and_epoch():
    keys = rng.keys_tensor([0, 1, 2], 1, "cpu")
    orders = rng.permutations(keys, epoch=0, n=1000)
    assert orders.shape == (3, 1000) and orders.dtype == torch.int64
    for row in orders:
        assert torch.equal(row.sort().values, torch.arange(1000))
    assert not torch.equal(orders[0], orders[1])
    assert not torch.equal(orders, rng.permutations(keys, 1, 1000))
    assert torch.equal(orders, rng.permutations(keys, 0, 1000))


def test_the_first_sample_of_an_epoch_is_uniform():
    # 5 000 runs x 10 samples: which sample comes first must be uniform (chi-square)
    keys = rng.keys_tensor(list(range(5000)), 1, "cpu")
    first = rng.permutations(keys, epoch=4, n=10)[:, 0]
    counts = torch.bincount(first, minlength=10).tolist()
    assert stats.chisquare(counts).pvalue > 1e-3
