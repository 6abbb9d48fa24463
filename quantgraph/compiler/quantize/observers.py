"""Calibration observers: bounded, mergeable statistics of one tensor's values, and the range each mode picks.

    obs = HistogramObserver()
    for batch in batches:
        obs.observe(activation(batch))
    lo, hi = obs.range("entropy")          # or "minmax", "percentile" (percentile=99.99), "mse", "auto"

* :class:`MinMaxObserver` keeps the exact min and max.
* :class:`HistogramObserver` also keeps ``bins`` counts on a grid of power-of-two bin width ``w = 2**exp`` anchored
  at zero (bin ``k`` holds ``[k*w, (k+1)*w)``) that always covers 0 and every finite value seen. When new data
  falls outside, the width doubles as often as needed and old bins merge in pairs, so memory never grows with the
  number of batches. Because grids of power-of-two widths anchored at zero nest, re-binning loses nothing: the
  state after any sequence of batches (or after ``merge``) is exactly the histogram of all the data at the
  smallest width that fits it, bit for bit the state of observing the concatenated data in one batch. The only
  error is the bin width itself (at most ``2 * span / bins``, span = max(hi, 0) - min(lo, 0)).

NaN and +-Inf values are not part of any statistic; observers count them (``nonfinite``) so calibration can report
them. Ranges are the data's: they are not widened to contain 0 nor made symmetric (the quantize pass decides that
from ``has_negative``). State is plain data (``state()`` / :func:`observer_from_state`): numbers and one int64
array, for JSON + npz, never pickle.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from quantgraph.kernels.observe import histogram_f32

#: default histogram resolution: power-of-two widths use between half and all of the bins, so at least 2048 bins
#: span the range, the resolution of TensorRT's entropy calibrator
DEFAULT_BINS = 4096
#: smallest bin width 2**MIN_EXP: finer bins resolve nothing an int8 scale of a realistic tensor can represent,
#: and the bound keeps bin indices of an all-zero start finite
MIN_EXP = -40
MODES = ("minmax", "percentile", "entropy", "mse", "auto")
#: the modes "auto" chooses among (per tensor, the one of least expected squared error on its histogram)
AUTO_CANDIDATES = ("minmax", "percentile", "entropy", "mse")
#: clipping factors the mse search tries: the range (a*lo, a*hi), a on a geometric grid of MSE_STEPS in
#: [MSE_MIN, 1] (geometric: a long tail puts the best a far below 1, where a linear grid is coarse)
MSE_STEPS = 160
MSE_MIN = 1e-3
#: quantization levels of the entropy search: u8 spans [0, T] with 255 steps; a signed tensor is searched on |x|
#: with the 128 magnitudes of s8 (TensorRT's convention)
LEVELS_UNSIGNED = 255
LEVELS_SIGNED = 128

Range = tuple[float, float]


class Observer:
    """Base: exact min/max, count of finite values, count of NaN/Inf, number of batches."""

    kind = "minmax"

    def __init__(self) -> None:
        self.min: float | None = None
        self.max: float | None = None
        self.count = 0
        self.nonfinite = 0
        self.batches = 0

    @property
    def has_negative(self) -> bool:
        """Whether any observed finite value was below zero."""
        return self.min is not None and self.min < 0

    def observe(self, x: Any) -> None:
        """Add one batch of values (any shape; floats; NaN/Inf are counted, not observed)."""
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        self.batches += 1
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates through min/max: one cheap check
            keep = x[np.isfinite(x)]
            self.nonfinite += int(x.size - keep.size)
            x = keep
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.count += int(x.size)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self._add(x)

    def _add(self, x: np.ndarray) -> None:
        """Hook: ``x`` is finite and min/max already include it."""

    def merge(self, other: "Observer") -> "Observer":
        """Fold ``other``'s statistics into this observer (in place; returns self). Exact for min/max."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {other.kind} observer into a {self.kind} observer")
        self._merge_extra(other)
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
            self.max = other.max if self.max is None else max(self.max, other.max)  # type: ignore[type-var]
        self.count += other.count
        self.nonfinite += other.nonfinite
        self.batches += other.batches
        return self

    def _merge_extra(self, other: Any) -> None:
        """Hook: runs before min/max are merged."""

    def range(self, mode: str = "minmax", percentile: float = 99.99) -> Range | None:
        """The (lo, hi) to quantize to; None when no finite value was observed."""
        _check_mode(mode)
        if mode != "minmax":
            raise ValueError(f"a {self.kind} observer keeps no histogram, so it has no {mode} range; calibrate "
                             f"with mode='{mode}' (histogram observers) or use mode='minmax'")
        if self.min is None:
            return None
        return (self.min, self.max)  # type: ignore[return-value]

    def state(self) -> dict[str, Any]:
        """Plain data (numbers, None, numpy arrays): see :func:`observer_from_state`."""
        return {"kind": self.kind, "min": self.min, "max": self.max, "count": self.count,
                "nonfinite": self.nonfinite, "batches": self.batches}

    def _load(self, s: dict[str, Any]) -> None:
        self.min = None if s["min"] is None else float(s["min"])
        self.max = None if s["max"] is None else float(s["max"])
        self.count, self.nonfinite, self.batches = int(s["count"]), int(s["nonfinite"]), int(s["batches"])

    def copy(self) -> "Observer":
        return observer_from_state(self.state())

    def __repr__(self) -> str:  # noqa: D105
        return f"{type(self).__name__}(min={self.min}, max={self.max}, count={self.count})"


class MinMaxObserver(Observer):
    """The exact minimum and maximum of everything observed (mode "minmax" only)."""

    kind = "minmax"


class HistogramObserver(Observer):
    """Min/max plus a fixed-size histogram on a zero-anchored power-of-two grid (see the module docstring).

    Args:
        bins: number of bins, fixed for the observer's life (two observers merge only with equal ``bins``).
    """

    kind = "histogram"

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        super().__init__()
        if bins < 2 * LEVELS_SIGNED:
            raise ValueError(f"a histogram needs at least {2 * LEVELS_SIGNED} bins for the entropy search; got {bins}")
        self.bins = int(bins)
        self.exp: int | None = None        # bin width 2**exp; None until the first finite value
        self.offset = 0                    # index of the bin counts[0] holds: min(0, floor(min / w))
        self.counts = np.zeros(self.bins, np.int64)

    @property
    def width(self) -> float | None:
        return None if self.exp is None else 2.0 ** self.exp

    # -- the grid ---------------------------------------------------------------------------------------------
    def _fits(self, e: int, lo: float, hi: float) -> bool:
        w = 2.0 ** e
        return max(0, math.floor(hi / w)) - min(0, math.floor(lo / w)) + 1 <= self.bins

    def _smallest_exp(self, lo: float, hi: float, start: int = MIN_EXP) -> int:
        """The smallest ``e >= start`` whose grid holds [min(lo, 0), max(hi, 0)] in ``bins`` bins.

        NOTE: fitting is monotone in ``e`` (bins at 2w are floor(k/2) of bins at w), so the width after any
        sequence of batches is this function of all the data: batching and merging never change the grid.
        """
        span = max(hi, 0.0) - min(lo, 0.0)
        e = start
        if span > 0:
            e = max(start, math.frexp(span / self.bins)[1] - 1)
        while not self._fits(e, lo, hi):
            e += 1
        while e > start and self._fits(e - 1, lo, hi):
            e -= 1
        return e

    def _regrid(self, e: int) -> None:
        """Move the counts to width 2**e (e >= exp) and to the offset that the current min needs; exact."""
        assert self.exp is not None and self.min is not None and e >= self.exp
        offset = min(0, math.floor(self.min / 2.0 ** e))
        if e == self.exp and offset == self.offset:
            return
        full = np.flatnonzero(self.counts)  # empty slots past the old max may fall outside the new grid
        # floor(k / 2**d) by an arithmetic shift; |k| <= bins, so a shift of 63 already gives 0 or -1
        k = (full + self.offset) >> min(e - self.exp, 63)
        moved = np.zeros(self.bins, np.int64)
        np.add.at(moved, k - offset, self.counts[full])
        self.counts, self.exp, self.offset = moved, e, offset

    def _add(self, x: np.ndarray) -> None:
        assert self.min is not None and self.max is not None
        if self.exp is None:
            self.exp = self._smallest_exp(self.min, self.max)
            self.offset = min(0, math.floor(self.min / 2.0 ** self.exp))
        else:
            self._regrid(self._smallest_exp(self.min, self.max, start=self.exp))
        if x.dtype == np.float32:
            histogram_f32(x.reshape(-1), np.float32(2.0 ** -self.exp), self.offset, self.counts)
        else:
            self.counts += self._bin_numpy(x)

    def _bin_numpy(self, x: np.ndarray) -> np.ndarray:
        """Counts of finite ``x`` on the current grid (the slow twin of ``kernels/observe.py: histogram_f32``)."""
        assert self.exp is not None
        # NOTE: scaling by a power of two is exact, so floor() puts every value in the bin the float64 grid
        # arithmetic above assumes; the offset is subtracted after flooring, when the values are small integers
        t = x * x.dtype.type(2.0 ** -self.exp)
        np.floor(t, out=t)
        t -= self.offset
        got = np.bincount(t.astype(np.intp).ravel(), minlength=self.bins)
        assert got.size == self.bins, "histogram grid does not cover the observed values"
        return got

    def _merge_extra(self, other: "HistogramObserver") -> None:
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {other.bins} and {self.bins} bins")
        if other.exp is None:
            return
        if self.exp is None:
            self.exp, self.offset, self.counts = other.exp, other.offset, other.counts.copy()
            return
        lo, hi = min(self.min, other.min), max(self.max, other.max)  # type: ignore[type-var]
        e = self._smallest_exp(lo, hi, start=max(self.exp, other.exp))
        self.min, self.max = lo, hi  # _regrid places the offset from the merged min
        self._regrid(e)
        theirs = other.copy()
        assert isinstance(theirs, HistogramObserver)
        theirs.min = lo
        theirs._regrid(e)
        self.counts += theirs.counts

    # -- ranges -----------------------------------------------------------------------------------------------
    def range(self, mode: str = "minmax", percentile: float = 99.99) -> Range | None:
        _check_mode(mode)
        if self.min is None:
            return None
        if mode == "minmax":
            return (self.min, self.max)  # type: ignore[return-value]
        if mode == "percentile":
            if not 50.0 < percentile <= 100.0:
                raise ValueError(f"percentile must be in (50, 100]; got {percentile}")
            return (self.quantile(1.0 - percentile / 100.0), self.quantile(percentile / 100.0))
        if mode == "mse":
            return self.mse_range()
        if mode == "auto":
            cands = [self.range(m, percentile) for m in AUTO_CANDIDATES]
            errs = [self.quant_error(*r) for r in cands]   # type: ignore[misc]
            return cands[int(np.argmin(errs))]
        return self.entropy_range()

    # -- the expected squared quantization error of a range (modes "mse" and "auto") -------------------------
    def _centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(value, count) of every non-empty bin, the value its centre narrowed to the observed [min, max]."""
        assert self.exp is not None
        k = np.flatnonzero(self.counts)
        w = 2.0 ** self.exp
        v = np.clip((k + self.offset + 0.5) * w, self.min, self.max)
        return v, self.counts[k].astype(np.float64)

    def quant_errors(self, los: np.ndarray, his: np.ndarray) -> np.ndarray:
        """Expected squared error (per value) of quantizing the data to 256 levels over each range (lo, hi),
        widened to hold 0 as the quantize pass does: clipping error (x - clip(x))^2 plus rounding error
        step^2 / 12 for every value (uniform within a step)."""
        v, c = self._centers()
        lo = np.minimum(np.asarray(los, np.float64), 0.0)[:, None]
        hi = np.maximum(np.asarray(his, np.float64), 0.0)[:, None]
        step = np.maximum(hi - lo, 1e-30) / 255.0
        clip = (v[None, :] - np.clip(v[None, :], lo, hi)) ** 2
        return ((clip + step ** 2 / 12.0) * c[None, :]).sum(axis=1) / c.sum()

    def quant_error(self, lo: float, hi: float) -> float:
        return float(self.quant_errors(np.array([lo]), np.array([hi]))[0])

    def mse_range(self) -> Range | None:
        """The range (a*min, a*max), a on a grid of ``MSE_STEPS`` in [MSE_MIN, 1], of least :meth:`quant_errors`:
        clipping the tail trades its clipping error for finer steps everywhere else."""
        if self.min is None:
            return None
        a = np.geomspace(MSE_MIN, 1.0, MSE_STEPS)
        errs = self.quant_errors(a * self.min, a * self.max)
        best = a[int(np.argmin(errs))]
        return (float(best * self.min), float(best * self.max))

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the data lies, within one bin width of ``np.quantile``.

        As numpy's default (linear) definition: rank ``r = q * (count - 1)``, interpolated between the values of
        ranks floor(r) and floor(r) + 1. Each of those is located in its bin (narrowed to the observed [min, max],
        so q=0 and q=1 give min and max exactly), the bin's values taken as evenly spread: within one bin width.
        """
        assert self.min is not None and self.max is not None and self.exp is not None
        r = q * (self.count - 1)
        j = int(math.floor(r))
        cum = np.cumsum(self.counts)
        v0 = self._value_at_rank(j, cum)
        if r == j or j + 1 >= self.count:
            return v0
        return v0 + (r - j) * (self._value_at_rank(j + 1, cum) - v0)

    def _value_at_rank(self, j: int, cum: np.ndarray) -> float:
        """An estimate of the j-th smallest value (0-based), inside the bin that holds it."""
        assert self.min is not None and self.max is not None and self.exp is not None
        k = int(np.searchsorted(cum, j, side="right"))  # the first bin with more than j values up to it
        before = int(cum[k - 1]) if k else 0
        w = 2.0 ** self.exp
        lo = max((self.offset + k) * w, self.min)
        hi = min((self.offset + k + 1) * w, self.max)
        inside = int(self.counts[k])
        if inside > 1:
            frac = (j - before) / (inside - 1)
        else:  # a lone value: it is the min or the max if its bin holds one, else somewhere inside
            frac = 0.0 if lo == self.min else 1.0 if hi == self.max else 0.5
        return float(lo + frac * (hi - lo))

    def magnitudes(self) -> np.ndarray:
        """Counts of |x| on the same grid: index k holds |x| in [k*w, (k+1)*w] (bins -k-1 and k fold together)."""
        zero = -self.offset                              # index of bin 0 in counts
        pos = self.counts[zero:]
        neg = self.counts[:zero][::-1]
        out = np.zeros(max(pos.size, neg.size), np.int64)
        out[:pos.size] += pos
        out[:neg.size] += neg
        return out

    def entropy_range(self) -> Range | None:
        """The KL-divergence threshold T (MXNet/TensorRT): (min, T) for non-negative data searched with 255 levels,
        else (max(min, -T), min(max, T)) with T searched on |x| with 128 levels. T is a bin edge, at most one bin
        width above the value it stands for."""
        if self.min is None:
            return None
        assert self.exp is not None and self.max is not None
        signed = self.has_negative
        hist = self.magnitudes() if signed else self.counts[-self.offset:].copy()
        # NOTE: ReLU outputs pile their zeros into bin 0; that spike would dominate P and pull the threshold down
        # to where each level is one bin, so bin 0 counts as its neighbour (as NVIDIA's pytorch-quantization does)
        if hist.size > 1:
            hist[0] = hist[1]
        i = kl_threshold(hist, LEVELS_SIGNED if signed else LEVELS_UNSIGNED)
        t = i * 2.0 ** self.exp
        if signed:
            return (max(self.min, -t), min(self.max, t))
        return (min(self.min, t), min(self.max, t))

    def state(self) -> dict[str, Any]:
        s = super().state()
        s.update(bins=self.bins, exp=self.exp, offset=self.offset, counts=self.counts.copy())
        return s

    def _load(self, s: dict[str, Any]) -> None:
        super()._load(s)
        counts = np.asarray(s["counts"], dtype=np.int64)
        if counts.shape != (self.bins,):
            raise ValueError(f"histogram state has {counts.shape} counts; expected ({self.bins},)")
        self.exp = None if s["exp"] is None else int(s["exp"])
        self.offset = int(s["offset"])
        self.counts = counts.copy()


def observer_from_state(s: dict[str, Any]) -> Observer:
    """Rebuild an observer from :meth:`Observer.state` (after JSON/npz, arrays may be lists)."""
    kind = s.get("kind")
    if kind == "minmax":
        obs: Observer = MinMaxObserver()
    elif kind == "histogram":
        obs = HistogramObserver(int(s["bins"]))
    else:
        raise ValueError(f"unknown observer kind {kind!r}; expected 'minmax' or 'histogram'")
    obs._load(s)
    return obs


def make_observer(mode: str, bins: int = DEFAULT_BINS) -> Observer:
    """The observer a calibration mode needs: min/max for "minmax", a histogram for every other mode."""
    _check_mode(mode)
    return MinMaxObserver() if mode == "minmax" else HistogramObserver(bins)


def channel_minmax(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of a constant (weights) along ``axis``: two 1-D arrays of ``w.shape[axis]``."""
    w = np.asarray(w)
    axis = axis % w.ndim
    rest = tuple(a for a in range(w.ndim) if a != axis)
    return w.min(axis=rest), w.max(axis=rest)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"calibration mode must be one of {', '.join(MODES)}; got {mode!r}")


# -- the entropy (KL divergence) threshold search -------------------------------------------------------------------
def kl_divergence(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for keeping the first ``i`` bins of ``hist`` (counts from 0 up), written out plainly.

    P: ``hist[:i]`` with every count beyond bin i-1 added to bin i-1 (the clipped distribution).
    Q: ``hist[:i]`` quantized to ``levels`` groups (group j holds bins [floor(j*i/L), floor((j+1)*i/L))), each
    group's count spread evenly over the bins where P is non-zero. Both normalized. This is the slow twin of
    :func:`kl_divergences`.
    """
    h = np.asarray(hist, np.float64)
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    q = np.zeros(i)
    for j in range(levels):
        lo, hi = j * i // levels, (j + 1) * i // levels
        nz = p[lo:hi] > 0
        if nz.any():
            q[lo:hi][nz] = h[lo:hi].sum() / nz.sum()
    if q.sum() == 0:
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    m = p > 0
    if np.any(q[m] == 0):
        return math.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def kl_divergences(hist: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) of :func:`kl_divergence` for every candidate ``i`` in ``levels .. n`` at once (n: bins up to the
    last non-zero one); entry ``i - levels``.

    With S_j the count and n_j the non-zero bins of group j, q_k = S_j / (n_j C_i) where C_i = sum(hist[:i]), so
    sum_k p_k log(p_k / q_k) needs only prefix sums of h, h log h and [h > 0]; the last bin, which also holds the
    clipped counts, is added on its own.
    """
    h = np.asarray(hist, np.float64)
    nzb = np.flatnonzero(h)
    n = int(nzb[-1]) + 1 if nzb.size else 0
    if n < levels:
        return np.zeros(0)
    h = h[:n]
    total = h.sum()
    csum = np.concatenate([[0.0], np.cumsum(h)])
    zsum = np.concatenate([[0], np.cumsum(h > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        hlog = np.concatenate([[0.0], np.cumsum(np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0))])
        i = np.arange(levels, n + 1)
        b = (i[:, None] * np.arange(levels + 1)[None, :]) // levels      # group bounds, b[:, L] = i
        s = np.diff(csum[b], axis=1)                                      # (candidates, levels) group counts
        nz = np.diff(zsum[b], axis=1).astype(np.float64)
        last = h[i - 1]
        clipped = total - csum[i]
        nz[:, -1] += (last == 0) & (clipped > 0)                         # bin i-1 is non-zero in P
        g = np.where(s > 0, np.log(s / np.maximum(nz, 1.0)), 0.0)
        cross = (s[:, :-1] * g[:, :-1]).sum(axis=1) + (s[:, -1] - last) * g[:, -1]
        kept = csum[i]
        kl = (hlog[i - 1] - cross) / total + (csum[i - 1] / total) * np.log(kept / total)
        p_last = (last + clipped) / total
        q_last = s[:, -1] / (nz[:, -1] * kept)
        kl = kl + np.where(p_last > 0, p_last * np.log(p_last / q_last), 0.0)
    return np.where(np.isfinite(kl) & (kept > 0), kl, np.inf)


def kl_threshold(hist: np.ndarray, levels: int) -> int:
    """The number of bins to keep that minimizes :func:`kl_divergences` (all bins when there are too few to
    search); ties go to the smaller threshold."""
    h = np.asarray(hist)
    nzb = np.flatnonzero(h)
    n = int(nzb[-1]) + 1 if nzb.size else 0
    if n <= levels:
        return max(n, 1)
    kl = kl_divergences(h, levels)
    return levels + int(np.argmin(kl))
