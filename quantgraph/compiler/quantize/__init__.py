"""Quantization: calibration observers and statistics (``calibrate``), then the quantize pass (annotate, Q/DQ).

    stats = calibrate(model, batches, mode="entropy")   # -> CalibrationStats: per tensor a range, has_negative
"""
from __future__ import annotations

from quantgraph.compiler.quantize.calibrate import calibrate, calibrate_graph, observed_tensors
from quantgraph.compiler.quantize.observers import (DEFAULT_BINS, MODES, HistogramObserver, MinMaxObserver,
                                                    Observer, channel_minmax, make_observer, observer_from_state)
from quantgraph.compiler.quantize.stats import CalibrationStats, TensorStats

__all__ = ["calibrate", "calibrate_graph", "observed_tensors", "CalibrationStats", "TensorStats", "Observer",
           "MinMaxObserver", "HistogramObserver", "make_observer", "observer_from_state", "channel_minmax",
           "DEFAULT_BINS", "MODES"]
