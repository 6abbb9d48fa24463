"""``quantgraph demo``: import, compile and time a small classifier on bundled labelled data.

The default model is the bundled digits CNN (see :mod:`quantgraph.models`). The demo prints one table row per
*variant* of the model: quantgraph's compiled model and, when onnxruntime is installed, onnxruntime on the same
file as the reference. Each variant is measured the same way (accuracy, max logit difference to the reference,
batch-1 latency, throughput at ``batch`` and on the whole test set, compile time); the int8 row is
``compile(..., quantize="int8")`` calibrated on the bundled ``calib_images`` (compile time includes calibration).

This module is a CLI surface: it prints plain text (everything else in quantgraph logs instead).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np

from quantgraph import config, models
from quantgraph.compiler.api import DEFAULT_OPT_LEVEL, compile as qg_compile
from quantgraph.frontends.onnx import load_onnx
from quantgraph.ir.graph import Graph
from quantgraph.ir.tensor import TensorInfo

#: the shape of one bundled sample image (C, H, W); the model input must be (N, C, H, W) float32
SAMPLE_SHAPE = (1, 8, 8)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Variant:
    """One way of running the model: ``predict(images) -> logits`` plus what it cost to build."""

    name: str
    predict: Predict
    nodes: Optional[int] = None  # nodes after compilation (None when not a quantgraph graph)
    op_counts: Optional[dict[str, int]] = None  # op counts after compilation
    compile_s: Optional[float] = None
    fixed_batch: Optional[int] = None  # the model's batch dim when it is not symbolic


@dataclass
class Row:
    """The measurements of one variant; ``asdict(row)`` is what ``run_demo`` returns under ``rows``."""

    name: str
    nodes: Optional[int]
    accuracy: float
    max_abs_diff: Optional[float]  # max |logits - reference logits|; None without a reference
    latency_ms: float  # median latency at batch 1 (or the model's fixed batch)
    throughput_batch: float  # images/s at the requested batch size
    throughput_all: float  # images/s running the whole test set in one call
    compile_s: Optional[float]
    warmup_s: float  # the first call (where kernels are JIT-compiled)


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _run_batched(v: Variant, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits for all images, ``batch`` at a time; a fixed-batch model gets its last chunk zero-padded."""
    size = v.fixed_batch or batch
    outs = []
    for i in range(0, len(images), size):
        chunk = images[i:i + size]
        n = len(chunk)
        if v.fixed_batch and n < size:
            chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)])
        outs.append(v.predict(chunk)[:n])
    return np.concatenate(outs)


def _measure(v: Variant, images: np.ndarray, labels: np.ndarray, batch: int, repeats: int,
             reference: np.ndarray | None) -> tuple[Row, np.ndarray]:
    """Time one variant and score its logits (taken from the whole-test-set run)."""
    t0 = time.perf_counter()
    v.predict(images[:v.fixed_batch or 1])
    warmup_s = time.perf_counter() - t0
    one = images[:v.fixed_batch or 1]
    latency = _median_s(lambda: v.predict(one), repeats)
    big = v.fixed_batch or batch
    t_batch = _median_s(lambda: _run_batched(v, images, big), max(3, repeats // 4))
    logits = _run_batched(v, images, len(images))
    t_all = _median_s(lambda: _run_batched(v, images, len(images)), max(3, repeats // 4))
    _check_logits(v.name, logits, len(images), int(labels.max()) + 1)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    diff = None if reference is None else float(np.abs(logits.astype(np.float64) - reference).max())
    row = Row(v.name, v.nodes, accuracy, diff, latency * 1e3, len(images) / t_batch, len(images) / t_all,
              v.compile_s, warmup_s)
    return row, logits


def _check_logits(name: str, logits: np.ndarray, n: int, classes: int) -> None:
    if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] < classes:
        raise ValueError(f"{name}: the model's first output has shape {tuple(logits.shape)}; the demo expects class "
                         f"scores of shape ({n}, >={classes})")


def _check_input(graph: Graph) -> TensorInfo:
    """The model's single image input; raise ValueError when it cannot take (N, 1, 8, 8) float32 images."""
    want = f"float32(N, {', '.join(map(str, SAMPLE_SHAPE))})"
    if len(graph.inputs) != 1:
        raise ValueError(f"model '{graph.name}' has {len(graph.inputs)} inputs ({', '.join(graph.inputs)}); the demo "
                         f"feeds one image input {want}")
    info = graph.tensors[graph.inputs[0]]
    ok = info.dtype == "float32" and (info.shape is None or (
        len(info.shape) == 4 and all(not isinstance(d, int) or d == s for d, s in zip(info.shape[1:], SAMPLE_SHAPE))))
    if not ok:
        raise ValueError(f"model input '{info.name}' is {info.describe()}; the demo's bundled digits are {want}")
    return info


def _fixed_batch(info: TensorInfo) -> int | None:
    return info.shape[0] if info.shape is not None and isinstance(info.shape[0], int) else None


def _quantgraph_variant(graph: Graph, input_name: str, opt_level: int, fixed_batch: int | None) -> Variant:
    t0 = time.perf_counter()
    compiled = qg_compile(graph, opt_level=opt_level)
    compile_s = time.perf_counter() - t0
    return Variant(f"quantgraph fp32 (O{opt_level})", lambda x: compiled({input_name: x})[0],
                   nodes=len(compiled.graph), op_counts=compiled.graph.op_counts(), compile_s=compile_s,
                   fixed_batch=fixed_batch)


def _onnxruntime_variant(model_path: str, input_name: str, fixed_batch: int | None) -> Variant | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    threads = config.get().threads
    if threads:  # NOTE: same thread budget as quantgraph's kernels, so the comparison is fair
        opts.intra_op_num_threads = threads
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    compile_s = time.perf_counter() - t0
    out_name = sess.get_outputs()[0].name
    return Variant("onnxruntime fp32", lambda x: sess.run([out_name], {input_name: x})[0],
                   compile_s=compile_s, fixed_batch=fixed_batch)


def _int8_variant(graph: Graph, input_name: str, opt_level: int, fixed_batch: int | None,
                  calib: np.ndarray, batch: int) -> Variant:
    """``compile(quantize="int8")`` calibrated (min/max) on the bundled calibration images, ``batch`` at a time."""
    step = fixed_batch or batch
    batches = [calib[i:i + step] for i in range(0, len(calib) - step + 1, step)] or [calib[:step]]
    t0 = time.perf_counter()
    compiled = qg_compile(graph, opt_level=opt_level, quantize="int8", calibration=batches)
    compile_s = time.perf_counter() - t0
    return Variant(f"quantgraph int8 (O{opt_level})", lambda x: compiled({input_name: x})[0],
                   nodes=len(compiled.graph), op_counts=compiled.graph.op_counts(), compile_s=compile_s,
                   fixed_batch=fixed_batch)


def _variants(graph: Graph, model_path: str, input_name: str, opt_level: int,
              fixed_batch: int | None, calib: np.ndarray | None = None,
              batch: int = 64) -> tuple[list[Variant], Variant | None]:
    """The quantgraph variants to compare (fp32, and int8 calibrated on ``calib``) and the onnxruntime reference."""
    ours = [_quantgraph_variant(graph, input_name, opt_level, fixed_batch)]
    if calib is not None and opt_level > 0:
        ours.append(_int8_variant(graph, input_name, opt_level, fixed_batch, calib, batch))
    return ours, _onnxruntime_variant(model_path, input_name, fixed_batch)


def _fmt(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row], batch: int, n_images: int, reference: str | None, latency_batch: int = 1) -> str:
    """The demo's result table, one line per variant."""
    diff_head = f"max|d| vs {reference.split()[0]}" if reference else "max|d|"
    head = ["variant", "nodes", "accuracy", diff_head, f"b{latency_batch} ms", f"b{batch} img/s", f"b{n_images} img/s",
            "compile s", "warmup s"]
    body = []
    for r in rows:
        diff = "(ref)" if reference and r.name == reference else _fmt(r.max_abs_diff, ".1e")
        body.append([r.name, _fmt(r.nodes, "d"), f"{r.accuracy:.4f}", diff, f"{r.latency_ms:.3f}",
                     f"{r.throughput_batch:,.0f}", f"{r.throughput_all:,.0f}", _fmt(r.compile_s, ".3f"),
                     f"{r.warmup_s:.3f}"])
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def run_demo(model_path: str | os.PathLike | None = None, batch: int = 64, repeats: int = 20,
             opt_level: int = DEFAULT_OPT_LEVEL,
             quiet: bool = False) -> dict[str, Any]:
    """Import, compile and run a classifier on the bundled digits test set; print and return the results.

    Args:
        model_path: an ONNX classifier with one float32 input of shape (N, 1, 8, 8); default: the bundled
            ``digits_cnn.onnx``.
        batch: batch size of the throughput measurement.
        repeats: timed runs per latency measurement (the median is reported); throughput takes the median of
            ``max(3, repeats // 4)`` passes over the test set.
        opt_level: passed to ``quantgraph.compile``.
        quiet: do not print.

    Returns:
        ``model``, ``input``, ``images``, ``op_counts`` (imported graph), ``compiled_op_counts``, ``accuracy``
        and ``logits`` of quantgraph's first variant, ``max_abs_diff`` between its logits and onnxruntime's
        (None without onnxruntime), ``onnxruntime`` (bool) and ``rows`` (one dict per table row).
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be >= 1; got batch={batch}, repeats={repeats}")
    say = (lambda *a: None) if quiet else print
    path = os.fspath(model_path) if model_path is not None else models.path(models.DEFAULT_MODEL)
    images, labels, calib = models.load_digits_sample()

    t0 = time.perf_counter()
    graph = load_onnx(path)
    import_s = time.perf_counter() - t0
    info = _check_input(graph)
    fixed = _fixed_batch(info)
    counts = graph.op_counts()
    say(f"quantgraph demo: {os.path.basename(path)}" + (" (bundled)" if model_path is None else ""))
    say(f"  input   {info.name}: {info.describe()}   outputs: {', '.join(graph.outputs)}")
    ops = ", ".join(f"{k} {v}" for k, v in counts.items())
    say(f"  graph   {len(graph)} nodes, imported in {import_s:.3f} s: {ops}")
    say(f"  data    {len(images)} labelled digits from {models.DIGITS_SAMPLE}; batch {fixed or batch}, "
        f"median of {repeats} runs")

    ours, ref = _variants(graph, path, info.name, opt_level, fixed, calib, batch)
    reference = None
    rows: list[Row] = []
    if ref is not None:
        ref_row, reference = _measure(ref, images, labels, batch, repeats, None)
    logits_first = None
    for v in ours:
        row, logits = _measure(v, images, labels, batch, repeats, reference)
        rows.append(row)
        if logits_first is None:
            logits_first = logits
    if ref is not None:
        rows.append(ref_row)
    say("")
    say(format_table(rows, fixed or batch, len(images), ref.name if ref else None, latency_batch=fixed or 1))
    if ref is None:
        say("\n(onnxruntime is not installed: no cross-check; `pip install onnxruntime` to compare)")
    return {
        "model": path,
        "input": info.name,
        "images": len(images),
        "op_counts": counts,
        "compiled_op_counts": ours[0].op_counts,
        "accuracy": rows[0].accuracy,
        "logits": logits_first,
        "max_abs_diff": rows[0].max_abs_diff,
        "onnxruntime": ref is not None,
        "rows": [asdict(r) for r in rows],
    }
