"""CalibrationStats: per tensor an observer's state and the range it chooses; merge, JSON (+ npz) files, summary.

    stats = quantgraph.calibrate(model, batches, mode="entropy")
    lo, hi = stats.range("conv_3")             # the chosen range; stats["conv_3"] has min/max/has_negative/...
    stats.range("conv_3", mode="percentile")   # any mode the observers support (histograms: all three)
    stats.save("calib.json")                   # writes calib.json and, for histograms, calib.npz
    stats = CalibrationStats.load("calib.json").merge(other)

Tensors are named as in the graph that was calibrated (the optimized fp32 graph), which is the graph the quantize
pass annotates.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from quantgraph.compiler.quantize.observers import MODES, Observer, Range, observer_from_state

FORMAT = "quantgraph.calibration"
VERSION = 1


@dataclass(frozen=True)
class TensorStats:
    """What calibration saw of one tensor, and the range chosen for it (None: no finite value was seen)."""

    name: str
    min: float | None
    max: float | None
    has_negative: bool
    count: int
    nonfinite: int
    range: Range | None


class CalibrationStats:
    """Observers by tensor name, with the mode (and percentile) that picks each tensor's range.

    Args:
        observers: tensor name -> observer (kept, not copied).
        mode: one of ``MODES`` ("minmax", "percentile", "entropy", "mse", "auto"); all but "minmax" need histogram
            observers.
        percentile: for mode "percentile": the share of values kept inside the range on each side, in percent.
        batches: how many calibration batches were observed.
        graph: name of the calibrated graph (informational).
    """

    def __init__(self, observers: Mapping[str, Observer], mode: str = "minmax", percentile: float = 99.99,
                 batches: int = 0, graph: str = "", means: Mapping[str, "ChannelMean"] | None = None):
        if mode not in MODES:
            raise ValueError(f"calibration mode must be one of {', '.join(MODES)}; got {mode!r}")
        if mode != "minmax":
            flat = [t for t, o in observers.items() if o.kind != "histogram"]
            if flat:
                raise ValueError(f"mode '{mode}' needs histogram observers; {len(flat)} tensor(s) have none, "
                                 f"e.g. '{flat[0]}'")
        self.observers: dict[str, Observer] = dict(observers)
        self.mode = mode
        self.percentile = float(percentile)
        self.batches = int(batches)
        self.graph = graph
        #: per-channel means of some tensors (bias correction's group inputs); kept in memory only, not saved
        self.means: dict[str, ChannelMean] = dict(means or {})
        self._ranges: dict[tuple, Range | None] = {}

    # -- lookups ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.observers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.observers)

    def __contains__(self, name: object) -> bool:
        return name in self.observers

    @property
    def tensors(self) -> list[str]:
        return list(self.observers)

    def _observer(self, name: str) -> Observer:
        obs = self.observers.get(name)
        if obs is None:
            raise KeyError(f"tensor '{name}' was not calibrated ({len(self.observers)} tensors were, from graph "
                           f"'{self.graph}')")
        return obs

    def range(self, name: str, mode: str | None = None, percentile: float | None = None) -> Range | None:
        """The (lo, hi) chosen for ``name`` (by this object's mode unless given); None if nothing finite was seen."""
        mode = mode or self.mode
        pct = self.percentile if percentile is None else float(percentile)
        key = (name, mode, pct if mode == "percentile" else None)
        if key not in self._ranges:  # entropy ranges cost a search: keep them
            self._ranges[key] = self._observer(name).range(mode, pct)
        return self._ranges[key]

    def ranges(self, mode: str | None = None, percentile: float | None = None) -> dict[str, Range | None]:
        return {t: self.range(t, mode, percentile) for t in self.observers}

    def has_negative(self, name: str) -> bool:
        return self._observer(name).has_negative

    def __getitem__(self, name: str) -> TensorStats:
        o = self._observer(name)
        return TensorStats(name, o.min, o.max, o.has_negative, o.count, o.nonfinite, self.range(name))

    def with_mode(self, mode: str, percentile: float | None = None) -> "CalibrationStats":
        """The same observers choosing ranges by ``mode`` (histograms answer every mode; min/max only "minmax")."""
        pct = self.percentile if percentile is None else float(percentile)
        if (mode, pct) == (self.mode, self.percentile):
            return self
        return CalibrationStats(self.observers, mode, pct, self.batches, self.graph, self.means)

    # -- combining --------------------------------------------------------------------------------------------
    def merge(self, other: "CalibrationStats") -> "CalibrationStats":
        """New stats over both sets of batches (neither input changes): tensors in both merge their observers
        (exact for min/max and for histograms of equal bin count), tensors in one are copied."""
        if (other.mode, other.percentile) != (self.mode, self.percentile):
            raise ValueError(f"cannot merge stats calibrated with mode '{other.mode}' (percentile "
                             f"{other.percentile}) into stats with mode '{self.mode}' (percentile {self.percentile})")
        merged = {t: o.copy() for t, o in self.observers.items()}
        for t, o in other.observers.items():
            if t in merged:
                try:
                    merged[t].merge(o)
                except ValueError as exc:
                    raise ValueError(f"tensor '{t}': {exc}") from None
            else:
                merged[t] = o.copy()
        means = dict(self.means)
        for t, m in other.means.items():
            means[t] = means[t].merged(m) if t in means else m
        return CalibrationStats(merged, self.mode, self.percentile, self.batches + other.batches,
                                self.graph or other.graph, means)

    def extend(self, other: "CalibrationStats") -> "CalibrationStats":
        """New stats with ``other``'s tensors added: more tensors observed on the *same* batches (a changed plan's
        missing ones), so the batch count stays and nothing is merged (a tensor in both keeps this one's)."""
        if (other.mode, other.percentile) != (self.mode, self.percentile):
            raise ValueError(f"cannot extend stats calibrated with mode '{self.mode}' by stats with mode "
                             f"'{other.mode}'")
        observers = {**other.observers, **self.observers}
        return CalibrationStats(observers, self.mode, self.percentile, self.batches, self.graph or other.graph,
                                {**other.means, **self.means})

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (JSON) and, when any observer has arrays (histograms), ``<path without .json>.npz``."""
        path = os.fspath(path)
        stem = path[:-5] if path.endswith(".json") else path
        npz_path = stem + ".npz"
        arrays: dict[str, np.ndarray] = {}
        entries = []
        for t, o in self.observers.items():
            state: dict[str, Any] = {}
            for k, v in o.state().items():
                if isinstance(v, np.ndarray):
                    key = f"a{len(arrays)}"
                    arrays[key] = v
                    state[k] = {"npz": key}
                else:
                    state[k] = v
            entries.append({"name": t, "observer": state})
        doc = {"format": FORMAT, "version": VERSION, "graph": self.graph, "mode": self.mode,
               "percentile": self.percentile, "batches": self.batches,
               "arrays": os.path.basename(npz_path) if arrays else None, "tensors": entries}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
        if arrays:
            with open(npz_path, "wb") as f:
                np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationStats":
        """Read what :meth:`save` wrote (no pickle: the npz is opened with ``allow_pickle=False``)."""
        path = os.fspath(path)
        with open(path) as f:
            doc = json.load(f)
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"{path}: not a quantgraph calibration file (format {doc.get('format')!r}, version "
                             f"{doc.get('version')!r}; expected {FORMAT!r}, {VERSION})")
        arrays: Mapping[str, np.ndarray] = {}
        if doc["arrays"]:
            npz = os.path.join(os.path.dirname(path), doc["arrays"])
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        observers = {}
        for e in doc["tensors"]:
            state = {k: (arrays[v["npz"]] if isinstance(v, dict) and "npz" in v else v)
                     for k, v in e["observer"].items()}
            observers[e["name"]] = observer_from_state(state)
        return cls(observers, doc["mode"], doc["percentile"], doc["batches"], doc["graph"])

    # -- report -----------------------------------------------------------------------------------------------
    def summary(self, max_rows: int | None = None) -> str:
        """A table: per tensor the observed min/max, the chosen range, whether it went negative, values seen."""
        mode = self.mode + (f" {self.percentile:g}" if self.mode == "percentile" else "")
        lines = [f"calibration of '{self.graph}': {len(self)} tensors, {self.batches} batches, mode {mode}"]
        names = list(self.observers)[:max_rows] if max_rows else list(self.observers)
        width = min(max([len(t) for t in names] + [6]), 48)
        lines.append(f"{'tensor':{width}s} {'min':>11s} {'max':>11s} {'range lo':>11s} {'range hi':>11s} "
                     f"{'neg':>3s} {'values':>11s}  non-finite")
        for t in names:
            s = self[t]
            shown = t if len(t) <= width else "..." + t[-(width - 3):]
            lo, hi = s.range if s.range is not None else (None, None)
            lines.append(f"{shown:{width}s} {_num(s.min)} {_num(s.max)} {_num(lo)} {_num(hi)} "
                         f"{'yes' if s.has_negative else 'no':>3s} {s.count:11d}  {s.nonfinite or ''}")
        if len(names) < len(self):
            lines.append(f"... {len(self) - len(names)} more")
        return "\n".join(lines)

    def __repr__(self) -> str:  # noqa: D105
        return f"CalibrationStats({len(self)} tensors, {self.batches} batches, mode={self.mode!r})"


class ChannelMean:
    """Running per-channel mean of a tensor along ``axis`` (every other axis averaged: N, H, W for NCHW)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sum: np.ndarray | None = None
        self.count = 0

    def observe(self, x: Any) -> None:
        x = np.asarray(x, np.float64)
        axis = self.axis % x.ndim
        rest = tuple(a for a in range(x.ndim) if a != axis)
        s = x.sum(axis=rest)
        self.sum = s if self.sum is None else self.sum + s
        self.count += x.size // x.shape[axis]

    @property
    def mean(self) -> np.ndarray | None:
        return None if self.sum is None or self.count == 0 else self.sum / self.count

    def merged(self, other: "ChannelMean") -> "ChannelMean":
        """The mean over both sets of values (neither changes)."""
        out = ChannelMean(self.axis)
        sums = [x for x in (self.sum, other.sum) if x is not None]
        out.sum = None if not sums else sums[0] if len(sums) == 1 else sums[0] + sums[1]
        out.count = self.count + other.count
        return out


class ChannelAbsMax:
    """Running per-channel max |x| along ``axis`` (SmoothQuant's activation statistic)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.max: np.ndarray | None = None

    def observe(self, x: Any) -> None:
        x = np.asarray(x)
        axis = self.axis % x.ndim
        rest = tuple(a for a in range(x.ndim) if a != axis)
        m = np.abs(x).max(axis=rest).astype(np.float64)
        self.max = m if self.max is None else np.maximum(self.max, m)


def _num(v: float | None) -> str:
    return f"{'-':>11s}" if v is None else f"{v:11.4g}"
