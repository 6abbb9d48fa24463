"""Observers against numpy: exact min/max, histogram counts, batching and merging that change nothing, bounded
state, percentile within one bin of np.percentile, the entropy threshold and its slow twin."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quantgraph.compiler.quantize.observers import (HistogramObserver, MinMaxObserver, channel_minmax,
                                                    kl_divergence, kl_divergences, kl_threshold, make_observer,
                                                    observer_from_state)

rng = np.random.default_rng(0)


def _batches(n: int = 6, size: int = 5000, grow: float = 1.7) -> list[np.ndarray]:
    """Batches whose range grows, so a histogram has to re-grid several times."""
    return [(rng.standard_normal(size) * grow ** i + 0.3 * i).astype(np.float32) for i in range(n)]


def _observed(obs, batches):
    for b in batches:
        obs.observe(b)
    return obs


def _reference_counts(h: HistogramObserver, data: np.ndarray) -> np.ndarray:
    """Bin ``data`` on ``h``'s grid in float64 (dividing by a power of two is exact)."""
    k = np.floor(data.astype(np.float64) / h.width).astype(np.int64) - h.offset
    return np.bincount(k, minlength=h.bins)


def test_minmax_equals_numpy() -> None:
    bs = _batches()
    obs = _observed(MinMaxObserver(), bs)
    allx = np.concatenate(bs)
    assert obs.range() == (float(allx.min()), float(allx.max()))
    assert obs.has_negative and obs.count == allx.size and obs.batches == len(bs)
    pos = _observed(MinMaxObserver(), [np.abs(b) for b in bs])
    assert not pos.has_negative


def test_nonfinite_values_are_counted_not_observed() -> None:
    x = np.array([1.0, np.nan, -2.0, np.inf, -np.inf, 3.0], np.float32)
    for obs in (MinMaxObserver(), HistogramObserver()):
        obs.observe(x)
        assert obs.range() == (-2.0, 3.0) and obs.nonfinite == 3 and obs.count == 3
    empty = MinMaxObserver()
    empty.observe(np.array([np.nan], np.float32))
    assert empty.range() is None and empty.nonfinite == 1


def test_histogram_counts_equal_binning_all_data_at_once() -> None:
    bs = _batches()
    h = _observed(HistogramObserver(), bs)
    allx = np.concatenate(bs)
    np.testing.assert_array_equal(h.counts, _reference_counts(h, allx))
    assert h.counts.sum() == allx.size
    # the grid is the finest power of two holding [min(lo, 0), max(hi, 0)]: half the width would not fit
    span_bins = lambda w: max(0, math.floor(allx.max() / w)) - min(0, math.floor(allx.min() / w)) + 1  # noqa: E731
    assert span_bins(h.width) <= h.bins < span_bins(h.width / 2)


@pytest.mark.parametrize("low", [0.0, -3.0])
def test_histogram_kernel_equals_its_numpy_twin(low: float) -> None:
    x = np.concatenate([rng.uniform(low, 5.0, 10_001), np.zeros(500), [low, 5.0]]).astype(np.float32)
    fast = _observed(HistogramObserver(), [x])
    np.testing.assert_array_equal(fast.counts, fast._bin_numpy(x))
    np.testing.assert_array_equal(fast.counts, _reference_counts(fast, x))
    as64 = _observed(HistogramObserver(), [x.astype(np.float64)])  # float64 takes the numpy path
    np.testing.assert_array_equal(as64.counts, fast.counts)
    strided = _observed(HistogramObserver(), [np.stack([x, x], axis=1)[:, 0]])  # non-contiguous
    np.testing.assert_array_equal(strided.counts, fast.counts)


def test_histogram_state_does_not_depend_on_batching() -> None:
    bs = _batches(8)
    one = _observed(HistogramObserver(), [np.concatenate(bs)])
    many = _observed(HistogramObserver(), bs)
    backwards = _observed(HistogramObserver(), bs[::-1])
    for h in (many, backwards):
        assert (h.exp, h.offset, h.min, h.max) == (one.exp, one.offset, one.min, one.max)
        np.testing.assert_array_equal(h.counts, one.counts)


@pytest.mark.parametrize("kind", ["minmax", "histogram"])
def test_merge_equals_observing_the_concatenated_data(kind: str) -> None:
    bs = _batches(8)
    make = (lambda: MinMaxObserver()) if kind == "minmax" else (lambda: HistogramObserver(1024))
    whole = _observed(make(), [np.concatenate(bs)])
    # halves with disjoint ranges: negatives in one, positives in the other, plus an empty observer
    neg = [b[b < 0] for b in bs]
    pos = [b[b >= 0] for b in bs]
    merged = _observed(make(), neg).merge(_observed(make(), pos)).merge(make())
    assert merged.range() == whole.range() and merged.count == whole.count
    if kind == "histogram":
        assert (merged.exp, merged.offset) == (whole.exp, whole.offset)
        np.testing.assert_array_equal(merged.counts, whole.counts)
    into_empty = make().merge(_observed(make(), bs))
    assert into_empty.range() == whole.range()


def test_merge_refuses_other_kinds_and_bin_counts() -> None:
    with pytest.raises(ValueError, match="cannot merge a histogram observer into a minmax observer"):
        MinMaxObserver().merge(HistogramObserver())
    with pytest.raises(ValueError, match="512 and 1024 bins"):
        HistogramObserver(1024).merge(HistogramObserver(512))


def test_state_stays_the_same_size_over_100_batches() -> None:
    def size(obs) -> tuple:
        return tuple(sorted((k, np.asarray(v).nbytes if isinstance(v, np.ndarray) else 0)
                            for k, v in obs.state().items()))

    for make in (MinMaxObserver, HistogramObserver):
        obs = make()
        obs.observe(rng.standard_normal(1000).astype(np.float32))
        first = size(obs)
        for i in range(100):  # a range that keeps growing forces re-gridding
            obs.observe((rng.standard_normal(1000) * 1.05 ** i).astype(np.float32))
        assert size(obs) == first and obs.batches == 101


@pytest.mark.parametrize("pct", [99.0, 99.9, 99.99])
def test_percentile_within_one_bin_of_numpy(pct: float) -> None:
    x = np.concatenate([rng.standard_normal(200_000), rng.exponential(3.0, 2000), [40.0, -35.0]]).astype(np.float32)
    h = _observed(HistogramObserver(), np.array_split(x, 7))
    lo, hi = h.range("percentile", pct)
    assert abs(lo - np.percentile(x, 100 - pct)) <= h.width
    assert abs(hi - np.percentile(x, pct)) <= h.width
    assert h.range("percentile", 100.0) == (float(x.min()), float(x.max()))


def test_entropy_threshold_clips_outliers() -> None:
    x = rng.standard_normal(1_000_000).astype(np.float32)
    x[:10] = 50.0
    x[10:20] = -50.0
    lo, hi = _observed(HistogramObserver(), [x]).range("entropy")
    assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0, (lo, hi)
    relu = np.maximum(x, 0)  # non-negative: searched with 255 levels from 0, the zero spike discounted
    lo, hi = _observed(HistogramObserver(), [relu]).range("entropy")
    assert lo == 0.0 and 2.0 < hi < 10.0, (lo, hi)


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_entropy_threshold_on_uniform_data_is_near_the_max(low: float) -> None:
    x = rng.uniform(low, 1.0, 1_000_000).astype(np.float32)
    lo, hi = _observed(HistogramObserver(), [x]).range("entropy")
    assert hi > 0.95 * x.max(), hi
    assert lo <= 0.95 * x.min() if low < 0 else lo == x.min()


@pytest.mark.parametrize("levels, n", [(4, 24), (16, 200), (128, 700)])
def test_kl_divergences_equal_the_direct_computation(levels: int, n: int) -> None:
    h = rng.poisson(rng.uniform(0, 30, n)).astype(np.int64)
    h[rng.random(n) < 0.3] = 0   # empty bins, runs of them, and a last kept bin that is empty
    h[-1] = 7
    fast = kl_divergences(h, levels)
    slow = np.array([kl_divergence(h, i, levels) for i in range(levels, n + 1)])
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast[np.isfinite(slow)], slow[np.isfinite(slow)], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(slow))
    assert kl_threshold(h, levels) == levels + int(np.argmin(slow))


def test_kl_is_infinite_where_clipped_counts_land_in_an_empty_group() -> None:
    h = np.array([5, 0, 0, 0, 4, 0, 0, 3])
    fast = kl_divergences(h, 2)
    slow = [kl_divergence(h, i, 2) for i in range(2, 9)]
    assert np.isinf(fast[0]) and np.isinf(slow[0])  # keep 2 bins: P puts 7 counts in bin 1, Q has none there
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert kl_threshold(h, 2) == 2 + int(np.argmin(slow))


def test_minmax_observer_has_no_histogram_ranges() -> None:
    obs = make_observer("minmax")
    obs.observe(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="keeps no histogram"):
        obs.range("entropy")
    with pytest.raises(ValueError, match="mode must be one of"):
        make_observer("l2")


def test_state_round_trips_through_json() -> None:
    for obs in (_observed(MinMaxObserver(), _batches()), _observed(HistogramObserver(), _batches())):
        state = obs.state()
        text = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()})
        back = observer_from_state(json.loads(text))
        assert type(back) is type(obs) and back.range() == obs.range()
        for k, v in back.state().items():
            np.testing.assert_array_equal(v, state[k])
        if isinstance(obs, HistogramObserver):
            assert back.range("entropy") == obs.range("entropy")


def test_channel_minmax_is_per_channel() -> None:
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    lo, hi = channel_minmax(w)
    np.testing.assert_array_equal(lo, w.reshape(8, -1).min(1))
    np.testing.assert_array_equal(hi, w.reshape(8, -1).max(1))
    lo, hi = channel_minmax(w, axis=-1)
    np.testing.assert_array_equal(hi, np.moveaxis(w, -1, 0).reshape(3, -1).max(1))
