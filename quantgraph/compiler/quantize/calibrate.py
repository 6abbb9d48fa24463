"""calibrate: run the optimized fp32 graph over calibration batches with an observer on each requested tensor.

    stats = quantgraph.calibrate("model.onnx", batches, mode="entropy")          # import + optimize + observe
    stats = calibrate_graph(graph, batches, tensors=[...])                       # a graph the caller optimized

The graph runs on its compiled fp32 plan (``Plan.with_observers`` hands each tensor's buffer to its observer right
after the node computing it), or on the reference interpreter (``on_tensor``) at opt_level 0 or with
``engine="interpreter"``. A batch is a feed dict, a list/tuple of arrays in input order, or one array (single-input
models); a bare array or dict passed as ``data`` is one batch. Every batch is validated like a ``CompiledModel``
call, and NaN/Inf inputs are refused, with errors naming the batch index and the input.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from quantgraph import config
from quantgraph.compiler.executable import CompiledModel, validate_feeds
from quantgraph.compiler.quantize.observers import DEFAULT_BINS, MODES, Observer, make_observer
from quantgraph.compiler.quantize.stats import CalibrationStats, ChannelMean
from quantgraph.errors import InputError
from quantgraph.ir import interpreter
from quantgraph.ir.dtypes import is_float
from quantgraph.ir.graph import Graph
from quantgraph.kernels.fp32.threads import single_threaded_blas

ENGINES = ("auto", "plan", "interpreter")


def calibrate(model: Any, data: Any, *, tensors: Sequence[str] | None = None, mode: str = "minmax",
              percentile: float = 99.99, bins: int = DEFAULT_BINS, opt_level: int | None = None,
              engine: str = "auto", progress: bool = True) -> CalibrationStats:
    """Observe the value ranges of a model's tensors over calibration batches.

    Args:
        model: anything ``quantgraph.compile`` takes (ONNX path, bytes, ModelProto, ``ir.Graph``), imported and
            optimized at ``opt_level``; or a ``CompiledModel``, whose graph and kernels are used as they are.
        data: an iterable of batches: feed dicts, lists/tuples of arrays in input order, or arrays (single-input
            models). A single dict or array is one batch.
        tensors: tensor names of the optimized graph to observe; default: every float tensor that is not a
            constant (inputs and node outputs).
        mode: how ranges are chosen: "minmax" (min/max observers), "percentile", "entropy", "mse" or "auto"
            (histograms; a histogram also answers every other mode, see ``CalibrationStats.range``).
        percentile: for "percentile": percent of values inside the range on each side (99.99 clips 0.01 %).
        bins: histogram bins (percentile and entropy).
        opt_level: optimization level (default: ``compile``'s). The graph observed is the one
            ``compile(quantize="int8")`` quantizes at that level: optimized up to epilogue fusion.
        engine: "plan" (compiled fp32 kernels), "interpreter" (numpy reference) or "auto" (plan unless opt_level 0).
        progress: show a tqdm bar over batches.

    Returns:
        CalibrationStats keyed by the optimized graph's tensor names.

    Raises:
        InputError: empty data, or a batch with a wrong input name, rank, dim or dtype, or NaN/Inf values
            (the message names the batch index and the input).
    """
    from quantgraph.compiler.api import DEFAULT_OPT_LEVEL, to_graph
    from quantgraph.compiler.pipeline import build_quantized, optimize

    if isinstance(model, CompiledModel):
        return calibrate_graph(model.graph, data, tensors=tensors, mode=mode, percentile=percentile, bins=bins,
                               engine=engine, progress=progress, compiled=model)
    level = DEFAULT_OPT_LEVEL if opt_level is None else opt_level
    if level == 0:
        graph, _ = optimize(to_graph(model), 0)
    else:  # NOTE: the graph compile(quantize="int8") annotates, so these stats can be handed to it
        graph, _ = build_quantized(level)[0].run(to_graph(model))
    if engine == "auto":
        engine = "interpreter" if level == 0 else "plan"
    return calibrate_graph(graph, data, tensors=tensors, mode=mode, percentile=percentile, bins=bins,
                           engine=engine, progress=progress)


def calibrate_graph(graph: Graph, data: Any, *, tensors: Sequence[str] | None = None, mode: str = "minmax",
                    percentile: float = 99.99, bins: int = DEFAULT_BINS, engine: str = "plan",
                    progress: bool = True, compiled: CompiledModel | None = None,
                    channel_means: Mapping[str, int] | None = None,
                    sinks: Mapping[str, Any] | None = None) -> CalibrationStats:
    """:func:`calibrate` on a graph as it is (the quantize pipeline calls this on its optimized fp32 graph).

    ``compiled`` reuses a ``CompiledModel`` of this graph (its kernels and plans) for ``engine="plan"``;
    otherwise the graph is lowered here. "auto" means "plan" when ``compiled`` has kernels or none is given.
    ``channel_means``: {tensor: channel axis}: also keep those tensors' per-channel means (``stats.means``).
    ``sinks``: {tensor: object with ``observe(array)``}: more statistics, kept by the caller (SmoothQuant's).
    """
    if mode not in MODES:
        raise ValueError(f"calibration mode must be one of {', '.join(MODES)}; got {mode!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        engine = "interpreter" if compiled is not None and compiled.lowered is None else "plan"
    watch = observed_tensors(graph, tensors)
    observers: dict[str, Observer] = {t: make_observer(mode, bins) for t in watch}
    means = {t: ChannelMean(axis) for t, axis in (channel_means or {}).items()}
    watchers: dict[str, Any] = dict(observers)
    for t, m in list(means.items()) + list((sinks or {}).items()):  # a tensor watched twice: one callback
        watchers[t] = _Both(watchers[t], m) if t in watchers else m
    if engine == "plan":
        run = _plan_runner(graph, watchers, compiled)
    else:
        run = _interpreter_runner(graph, watchers)
    inputs = [graph.tensors[t] for t in graph.inputs]
    n = 0
    from quantgraph.kernels.progress import jit_progress

    with jit_progress(True if progress else None):  # the first batch compiles the kernels on a fresh machine
        for i, batch in enumerate(_batches(data, progress)):
            feeds = batch_feeds(inputs, batch, i)
            run(feeds)
            n += 1
    if n == 0:
        raise InputError("calibration data is empty: it yielded no batch; pass an iterable of feed dicts, arrays "
                         "or lists of arrays in input order")
    return CalibrationStats(observers, mode, percentile, n, graph.name, means)


class _Both:
    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def observe(self, x: Any) -> None:
        for s in self.sinks:
            s.observe(x)


def observed_tensors(graph: Graph, tensors: Sequence[str] | None = None) -> list[str]:
    """``tensors`` checked (exist, float, not constant), or every float non-constant tensor: inputs, then node
    outputs in topological order."""
    if tensors is None:
        names = list(graph.inputs) + [t for n in graph.topo() for t in n.outputs if t]
        return [t for t in names if graph.tensors[t].const is None and is_float(graph.tensors[t].dtype)]
    out = []
    for t in tensors:
        info = graph.tensors.get(t)
        if info is None or (info.const is None and t not in graph.inputs and graph.producer(t) is None):
            raise InputError(f"tensors= names '{t}', which is not a tensor of graph '{graph.name}'")
        if info.const is not None:
            raise InputError(f"tensors= names '{t}', a constant: constants need no calibration (see channel_minmax)")
        if not is_float(info.dtype):
            raise InputError(f"tensors= names '{t}', which is {info.dtype}; only float tensors are calibrated")
        if t not in out:
            out.append(t)
    return out


def batch_feeds(inputs: Sequence[Any], batch: Any, index: int) -> dict[str, np.ndarray]:
    """One batch as validated feeds (``CompiledModel``'s checks) with finite float inputs; errors name the batch."""
    if isinstance(batch, Mapping):
        args: tuple = (dict(batch),)
    elif isinstance(batch, (list, tuple)):
        args = tuple(batch)
    else:
        args = (batch,)
    try:
        feeds = validate_feeds(inputs, args, {})
    except InputError as exc:
        raise InputError(f"calibration batch {index}: {exc.message}") from None
    for info in inputs:
        x = feeds[info.name]
        if is_float(info.dtype) and not np.isfinite(x).all():
            nan = int(np.isnan(x).sum())
            inf = int(np.isinf(x).sum())
            raise InputError(f"calibration batch {index}: input '{info.name}' has {nan} NaN and {inf} Inf value(s) "
                             f"of {x.size}; calibration data must be finite")
    return feeds


def _batches(data: Any, progress: bool) -> Iterable[Any]:
    if isinstance(data, (np.ndarray, Mapping)):  # iterating an array's first axis is never what is meant
        data = [data]
    from tqdm.auto import tqdm

    total = len(data) if hasattr(data, "__len__") else None
    return tqdm(data, total=total, desc="calibrate", unit="batch", disable=not progress, leave=False)


def _interpreter_runner(graph: Graph, observers: dict[str, Observer]) -> Callable[[dict], None]:
    def on_tensor(name: str, value: np.ndarray) -> None:
        obs = observers.get(name)
        if obs is not None:
            obs.observe(value)

    check = config.get().verify

    def run(feeds: dict[str, np.ndarray]) -> None:
        for t in graph.inputs:
            if t in observers:
                observers[t].observe(feeds[t])
        with np.errstate(all="ignore"):
            interpreter.run(graph, feeds, on_tensor=on_tensor, check_types=check)
    return run


def _plan_runner(graph: Graph, observers: dict[str, Observer],
                 compiled: CompiledModel | None) -> Callable[[dict], None]:
    if compiled is None or compiled.lowered is None:
        from quantgraph.compiler.lower import lower

        compiled = CompiledModel(graph, lower(graph))
    observe = {t: o.observe for t, o in observers.items()}
    plans: dict[int, Any] = {}

    def run(feeds: dict[str, np.ndarray]) -> None:
        plan = compiled.plan_for(feeds)  # type: ignore[union-attr]
        watched = plans.get(id(plan))
        if watched is None:
            watched = plans[id(plan)] = plan.with_observers(observe)
        with single_threaded_blas(), np.errstate(all="ignore"):
            watched.run([feeds[t] for t in graph.inputs])
    return run
