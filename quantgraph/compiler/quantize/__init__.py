"""Quantization: calibration observers and statistics (``calibrate``), then the quantize pass (annotate, Q/DQ).

    stats = calibrate(model, batches, mode="entropy")   # -> CalibrationStats: per tensor a range, has_negative
    plan = plan_quantization(graph, QuantizeOptions(...))  # per node int8 / fp32, the tensors to calibrate
    insert_qdq(graph, plan, stats)                      # the decisions as a QDQ graph (quantize.py)
"""
from __future__ import annotations

from quantgraph.compiler.quantize.calibrate import calibrate, calibrate_graph, observed_tensors
from quantgraph.compiler.quantize.observers import (DEFAULT_BINS, MODES, HistogramObserver, MinMaxObserver,
                                                    Observer, channel_minmax, make_observer, observer_from_state)
from quantgraph.compiler.quantize.quantize import (Decision, QuantizeOptions, QuantPlan, insert_qdq,
                                                   plan_quantization)
from quantgraph.compiler.quantize.stats import CalibrationStats, TensorStats

__all__ = ["calibrate", "calibrate_graph", "observed_tensors", "CalibrationStats", "TensorStats", "Observer",
           "MinMaxObserver", "HistogramObserver", "make_observer", "observer_from_state", "channel_minmax",
           "DEFAULT_BINS", "MODES", "plan_quantization", "insert_qdq", "QuantizeOptions", "QuantPlan", "Decision"]
