"""quantgraph.compile(): model in, CompiledModel out.

    import -> optimize (passes, O0..O3) -> lower (a kernel per node, weights packed) -> plan
    import -> optimize (first half) -> plan quantization -> calibrate -> insert QDQ -> optimize (realize int8, fuse,
              layout) -> lower                                                          (quantize="int8")

Plans (buffers bound for one input-shape signature) are built on the first call with new shapes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Mapping, Sequence, Union

import onnx

from quantgraph import config
from quantgraph.compiler.artifact import sha256_of_model
from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.compiler.passes.infer_shapes import infer_shapes
from quantgraph.compiler.pipeline import build_quantized, optimize
from quantgraph.compiler.quantize import subgraphs as inner
from quantgraph.compiler.quantize.bias_correction import input_channel_axes
from quantgraph.compiler.quantize.calibrate import calibrate_graph
from quantgraph.compiler.quantize.equalize import equalize
from quantgraph.compiler.quantize.qdq_form import integer_weights
from quantgraph.compiler.quantize.range_guard import guarded_tensors, range_conflicts
from quantgraph.compiler.quantize.quantize import QuantizeOptions, QuantPlan, insert_qdq, plan_quantization
from quantgraph.compiler.quantize.sensitivity import QuantSource
from quantgraph.compiler.quantize.stats import CalibrationStats
from quantgraph.errors import InputError
from quantgraph.ir.graph import Graph
from quantgraph.ir.shapes import normalize_shape
from quantgraph.ir.verify import verify

log = logging.getLogger(__name__)

#: ops that mark a graph as quantized already (an imported QDQ or QOperator model)
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "QConv", "QMatMul", "QAdd", "DynamicQuantizeLinear",
                           "QuantizeClip", "QAveragePool", "QConcat"})

#: NHWC (the layout pass of O3) is faster than NCHW for our conv kernels: see kernels/fp32/threads.py, README
DEFAULT_OPT_LEVEL = 3

ModelLike = Union[Graph, str, os.PathLike, bytes, onnx.ModelProto]


def to_graph(model: ModelLike) -> Graph:
    """An ir.Graph for a Graph (copied), an ONNX path, bytes or ModelProto."""
    if isinstance(model, Graph):
        return model.copy()
    from quantgraph.frontends.onnx import import_onnx

    return import_onnx(model)


QUANTIZE = (None, "int8")


def compile(model: ModelLike, opt_level: int = DEFAULT_OPT_LEVEL,
            input_shapes: Mapping[str, Sequence[Any]] | None = None, *, quantize: str | None = None,
            calibration: Any = None, calib_mode: str = "auto", percentile: float = 99.99,
            activation_dtype: str = "auto", per_channel: bool = True, exclude: Sequence[str] = (),
            precision: Mapping[str, str] | None = None, bias_correction: bool = True, equalize: bool = False,
            smooth_quant: float | None = None, range_guard: bool = True, accuracy_target: Any = None,
            accuracy_tolerance: float = 0.005, progress: bool = False, **options: Any) -> CompiledModel:
    """Compile a model for this CPU, in fp32 or quantized to int8.

    Args:
        model: an ``ir.Graph``, an ONNX file path, serialized bytes or an ``onnx.ModelProto``. A QDQ or QOperator
            model (quantized elsewhere) runs on the int8 kernels with its own scales, with or without ``quantize``.
        opt_level: 0 runs the reference interpreter on the imported graph (the oracle); 1 adds cleanup passes
            (constant folding, identity/dead-code elimination) and compiled kernels; 2 adds BatchNorm folding,
            LayerNorm/GELU recognition and Conv/MatMul epilogue fusion; 3 adds the NHWC layout pass.
        input_shapes: override declared input shapes, e.g. ``{"x": ("N", 3, 224, 224)}`` for a dynamic batch.
        quantize: None (fp32) or "int8": quantize after calibrating on ``calibration`` (see
            ``compiler/quantize/quantize.py`` for what runs int8).
        calibration: an iterable of batches (feed dicts, lists of arrays in input order, or arrays for one-input
            models), or the ``CalibrationStats`` of ``quantgraph.calibrate(model, ...)`` at the same opt_level.
        calib_mode: "minmax", "percentile", "entropy" (KL divergence threshold search), "mse" (the clipped range of
            least expected squared quantization error, rounding and clipping, on the tensor's histogram) or "auto"
            (per tensor, whichever of minmax / percentile / entropy / mse has the least such error; the default:
            dev set mean metric 0.904 -> 0.941 with bias_correction, see the commit log). CalibrationStats without
            histograms (calibrated with mode="minmax") are used with their own mode under "auto".
        percentile: for "percentile": percent of values kept inside the range on each side.
        activation_dtype: "auto" or "uint8" (u8, asymmetric) or "int8" (s8, asymmetric).
        per_channel: weights quantized per output channel (else one scale per tensor).
        exclude: node names, op types or regexes (matched against node names) to keep in fp32.
        precision: {node name | op type | regex: "int8" | "int16" | "fp32"}: the precision of those nodes (first
            match wins; ``exclude`` wins over it). "int16" (W8A16: int16 activations, s8 weights) names the anchors
            of Conv/MatMul/Gemm groups; on any other op it is an InputError, on a MatMul of two activations fp32.
        bias_correction: shift each int8 layer's bias by the mean error its weight quantization adds (default on;
            needs calibration batches: CalibrationStats from ``quantgraph.calibrate`` carry no channel means).
        equalize: cross-layer equalization of consecutive convs (data-free; Nagel et al. 2019).
        smooth_quant: SmoothQuant's alpha for MatMul/Gemm activations with outlier channels (None: off).
        range_guard: after calibration, keep fp32 the int8 readers of tensors holding sentinel values (masks of
            -1e4 .. -3.4e38) and Concats of ranges 64x apart with their readers (``quantize/range_guard.py``);
            the reasons are in ``model.quantization.decisions``.
        accuracy_target: an output SQNR in dB, or a callable ``metric(model) -> float`` (higher is better): keep
            the units that harm accuracy most in a wider precision until the model meets it (``quantize/search.py``;
            the trials are in ``model.accuracy_search``). Needs ``calibration`` as a sequence of batches.
        accuracy_tolerance: with a callable target, how far below the fp32 model's value the metric may fall.
        progress: show progress bars: over the calibration batches, the accuracy search's trials and the
            first-time JIT compile of kernels.
    """
    from quantgraph.kernels.progress import jit_progress

    with jit_progress(True if progress else None):
        return _compile(model, opt_level, input_shapes, quantize, calibration, calib_mode, percentile,
                        activation_dtype, per_channel, exclude, precision, bias_correction, equalize, smooth_quant,
                        range_guard, accuracy_target, accuracy_tolerance, progress, options)


def _compile(model: ModelLike, opt_level: int, input_shapes: Mapping[str, Sequence[Any]] | None, quantize: str | None,
             calibration: Any, calib_mode: str, percentile: float, activation_dtype: str, per_channel: bool,
             exclude: Sequence[str], precision: Mapping[str, str] | None, bias_correction: bool, equalize: bool,
             smooth_quant: float | None, range_guard: bool, accuracy_target: Any, accuracy_tolerance: float,
             progress: bool, options: dict[str, Any]) -> CompiledModel:
    if options:
        raise TypeError(f"compile() got unknown option(s) {sorted(options)}")
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0..3, got {opt_level}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be None (fp32) or 'int8'; got {quantize!r}")
    if quantize is not None and opt_level == 0:
        raise ValueError("quantize='int8' needs opt_level 1..3 (opt_level 0 runs the imported graph as it is)")
    if quantize is None and calibration is not None:
        raise ValueError("calibration= was given without quantize='int8'")
    if quantize is None and accuracy_target is not None:
        raise ValueError("accuracy_target= was given without quantize='int8'")
    qopts = QuantizeOptions(calib_mode, percentile, activation_dtype, per_channel, tuple(exclude),
                            tuple((precision or {}).items()), bias_correction, equalize, smooth_quant,
                            range_guard)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model_in = model
    graph = to_graph(model)
    if input_shapes:
        _override_input_shapes(graph, input_shapes)
    if config.get().verify:
        verify(graph)
    seconds["import"] = time.perf_counter() - t0
    before = graph.op_counts()

    t0 = time.perf_counter()
    quantization = source = None
    # the graph export_onnx() writes: standard ONNX ops only (fp32: as imported; int8: the QDQ graph the quantizer
    # wrote). Graph.copy shares the (read-only) constant arrays, so this costs no weight memory.
    export = graph.copy()
    if quantize is None:
        graph, reports = optimize(graph, opt_level)
    else:
        graph, reports, quantization, source, qdq = _quantize(graph, opt_level, calibration, qopts, progress,
                                                              seconds)
        export = qdq if qdq is not None else export
    seconds["optimize"] = time.perf_counter() - t0 - seconds.get("calibrate", 0.0)
    if accuracy_target is not None and source is not None:
        searched = _search(source, before, reports, seconds, accuracy_target, accuracy_tolerance, progress)
        searched.source_sha256 = sha256_of_model(model_in)
        return searched

    lowered = None
    if opt_level > 0:
        t0 = time.perf_counter()
        lowered = lower(graph, opt_level)
        seconds["lower"] = time.perf_counter() - t0
    model = CompiledModel(graph, lowered, opt_level=opt_level, optimized_from=before, pass_reports=reports,
                          compile_seconds=seconds, quantization=quantization)
    model.quant_source = source
    model.export_graph = export
    model.source_sha256 = sha256_of_model(model_in)
    return model


def _search(source: QuantSource, before: dict, reports: list, seconds: dict, target: Any, tolerance: float,
            progress: bool) -> CompiledModel:
    """compile(accuracy_target=): each trial finishes the pipeline from the planned fp32 graph."""
    from quantgraph.compiler.quantize.search import search

    _, second = build_quantized(source.opt_level)

    def build(opts: QuantizeOptions) -> CompiledModel:
        g = source.graph.copy()
        plan = plan_quantization(g, opts)
        stats = _stats_for(g, plan, source)
        _with_subgraphs(g, plan, source.subgraphs)
        insert_qdq(g, plan, stats)
        qdq = g.copy()
        integer_weights(qdq)
        g, more = second.run(g)
        m = CompiledModel(g, lower(g), opt_level=source.opt_level, optimized_from=before,
                          pass_reports=reports + more, compile_seconds=dict(seconds), quantization=plan)
        m.quant_source = QuantSource(source.graph, stats, opts, source.opt_level, source.data, source.subgraphs)
        m.export_graph = qdq
        return m

    t0 = time.perf_counter()
    fp32_graph, _ = optimize(source.graph.copy(), source.opt_level)
    fp32 = CompiledModel(fp32_graph, lower(fp32_graph), opt_level=source.opt_level)
    model, result = search(source, build, fp32, target, tolerance, progress)
    model.compile_seconds["accuracy_search"] = time.perf_counter() - t0
    model.accuracy_search = result
    return model


def _stats_for(graph: Graph, plan: QuantPlan, source: QuantSource) -> CalibrationStats:
    """The source's stats, calibrating (once more) only the tensors a changed plan needs and they lack."""
    source.stats = _calibrate_missing(graph, plan, source.stats, source.data)
    return source.stats


def _calibrate_missing(graph: Graph, plan: QuantPlan, stats: CalibrationStats, data: Any) -> CalibrationStats:
    missing = [t for t in plan.observe if t not in stats]
    if not missing:
        return stats
    if data is None:
        raise InputError(f"the changed quantization plan needs {len(missing)} tensor(s) calibrated that were not, "
                         f"e.g. '{missing[0]}', and the calibration data was an iterator (used up) or "
                         "CalibrationStats: pass a list of batches")
    more = calibrate_graph(graph, data, tensors=missing, mode=stats.mode, percentile=stats.percentile,
                           engine="plan", progress=False)
    # NOTE: extend, not merge: the same batches, more tensors (merge counts the batches twice). Both keep the
    # channel means now; when merge dropped them, every search trial that calibrated a tensor lost bias
    # correction (efficientnet's int16 probe measured 17.5 dB instead of 25.2)
    return stats.extend(more)


def _quantize(graph: Graph, opt_level: int, calibration: Any, opts: QuantizeOptions, progress: bool,
              seconds: dict[str, float]) -> tuple[Graph, list, QuantPlan | None, QuantSource | None, Graph | None]:
    """The two halves of the pipeline around plan -> calibrate -> insert_qdq; the last item is a copy of the QDQ
    graph insert_qdq wrote (None when the model came quantized: its imported graph is the QDQ form)."""
    first, second = build_quantized(opt_level)
    graph, reports = first.run(graph)
    if is_quantized(graph):  # quantized elsewhere: its own scales rule
        if calibration is not None:
            log.warning("model '%s' is already quantized (QDQ/QOperator); calibration= is ignored", graph.name)
        graph, more = second.run(graph)
        return graph, reports + more, None, None, None
    if calibration is None:
        raise InputError("quantize='int8' needs calibration=: an iterable of sample batches (feed dicts or arrays) "
                         "or the CalibrationStats of quantgraph.calibrate()")
    if opts.equalize:  # data-free: on the fp32 graph, so calibration observes the equalized one
        equalize(graph)
    if opts.smooth_quant is not None:
        if isinstance(calibration, CalibrationStats):
            raise InputError("smooth_quant= changes the graph before calibration, so it needs calibration batches, "
                             "not CalibrationStats of the unsmoothed graph")
        calibration = _smooth(graph, calibration, opts.smooth_quant, progress)
    plan = plan_quantization(graph, opts)
    data = calibration if isinstance(calibration, (list, tuple)) else None
    means = input_channel_axes(graph, list(plan.weights)) if opts.bias_correction else None
    t0 = time.perf_counter()
    recorded: dict[str, inner.Recorder] = {}
    if isinstance(calibration, CalibrationStats):
        if inner.quantizable(graph):
            log.info("quantize: If branches and Loop/Scan bodies stay fp32: CalibrationStats hold no values that "
                     "reached them; pass calibration batches to quantize inside them")
        missing = [t for t in plan.observe if t not in calibration]
        if missing:
            raise InputError(f"calibration stats of graph '{calibration.graph}' lack {len(missing)} tensor(s) the "
                             f"quantizer needs, e.g. '{missing[0]}'; calibrate the same model at the same "
                             "opt_level (quantgraph.calibrate(model, data, opt_level=...))")
        mode = opts.calib_mode
        if mode == "auto" and any(o.kind != "histogram" for o in calibration.observers.values()):
            mode = calibration.mode  # min/max observers answer only their own mode; "auto" is the default
        stats = calibration.with_mode(mode, opts.percentile)
        if means and not stats.means:
            log.info("bias_correction=True needs per-channel means of the group inputs, which CalibrationStats "
                     "from quantgraph.calibrate() lack; pass calibration batches to correct biases")
    else:
        extra = guarded_tensors(graph, plan) if opts.range_guard else []
        recorded = inner.recorders(graph)
        stats = calibrate_graph(graph, calibration, tensors=plan.observe + extra, mode=opts.calib_mode,
                                percentile=opts.percentile, engine="plan", progress=progress, channel_means=means,
                                sinks=recorded)
    if opts.range_guard:
        kept = range_conflicts(graph, plan, stats)
        if kept:
            for node, why in kept.items():
                log.info("quantize: %s stays fp32 (%s)", node, why)
            guarded = dataclasses.replace(opts, kept_float=tuple(kept.items()))
            replan = plan_quantization(graph, guarded)
            if data is not None or all(t in stats for t in replan.observe):
                opts, plan = guarded, replan
                stats = _calibrate_missing(graph, plan, stats, data)
            else:
                log.warning("quantize: the range guards would keep %d node(s) fp32 (e.g. %s: %s), but the new "
                            "plan needs tensors calibrated again and calibration= was an iterator; pass a list",
                            len(kept), *next(iter(kept.items())))
    seconds["calibrate"] = time.perf_counter() - t0
    inside = _quantize_subgraphs(graph, opt_level, opts, recorded, seconds) if recorded else []
    source = QuantSource(graph.copy(), stats, opts, opt_level, data, inside)
    _with_subgraphs(graph, plan, inside)
    insert_qdq(graph, plan, stats)
    if config.get().verify:
        verify(graph)
    qdq = graph.copy()
    integer_weights(qdq)
    graph, more = second.run(graph)
    return graph, reports + more, plan, source, qdq


def _quantize_subgraphs(graph: Graph, opt_level: int, opts: QuantizeOptions, recorded: dict,
                        seconds: dict[str, float]) -> list[inner.Quantized]:
    """Each If branch / Loop or Scan body calibration reached, through the quantize pipeline on the values that
    reached it (quantize/subgraphs.py)."""
    def quantize_one(branch: Graph, batches: list) -> tuple[Graph | None, QuantPlan | None]:
        times: dict[str, float] = {}
        _, _, plan, _, qdq = _quantize(branch, opt_level, batches, opts, False, times)
        seconds["calibrate"] = seconds.get("calibrate", 0.0) + times.get("calibrate", 0.0)
        return qdq, plan

    t0 = time.perf_counter()
    out = inner.quantize_subgraphs(graph, recorded, quantize_one)
    seconds["quantize_subgraphs"] = time.perf_counter() - t0
    return out


def _with_subgraphs(graph: Graph, plan: QuantPlan, quantized: list[inner.Quantized]) -> None:
    inner.apply_subgraphs(graph, quantized)
    plan.subgraphs = {q.key: q.plan for q in quantized}


def _smooth(graph: Graph, calibration: Any, alpha: float, progress: bool) -> Any:
    """SmoothQuant: a first pass for per-channel max |x| of the candidate activations, then the transform; returns
    the calibration batches as a list (they are iterated again)."""
    from quantgraph.compiler.quantize import smooth
    from quantgraph.compiler.quantize.stats import ChannelAbsMax

    if not isinstance(calibration, (list, tuple)):
        calibration = [calibration] if isinstance(calibration, Mapping) or hasattr(calibration, "shape") \
            else list(calibration)
    cands = smooth.candidates(graph)
    if not cands:
        return calibration
    sinks = {t: ChannelAbsMax(-1) for t in cands}
    calibrate_graph(graph, calibration, tensors=[], engine="plan", progress=progress, sinks=sinks)
    smooth.smooth(graph, {t: s.max for t, s in sinks.items() if s.max is not None}, float(alpha))
    return calibration


def is_quantized(graph: Graph) -> bool:
    """Whether ``graph`` holds quantized ops (imported QDQ / QOperator, or realized int8 ops)."""
    return any(n.op in QUANTIZED_OPS for n in graph)


def _override_input_shapes(graph: Graph, input_shapes: Mapping[str, Sequence[Any]]) -> None:
    for name, shape in input_shapes.items():
        if name not in graph.inputs:
            raise InputError(f"input_shapes names '{name}', which is not an input; inputs: {graph.inputs}")
        graph.set_tensor(graph.tensors[name].with_(shape=normalize_shape(shape)))
    infer_shapes(graph)
