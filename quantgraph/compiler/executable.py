"""CompiledModel: a compiled graph you can call with arrays."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from quantgraph import config
from quantgraph.errors import InputError
from quantgraph.ir import interpreter
from quantgraph.kernels.fp32.threads import single_threaded_blas
from quantgraph.ir.dtypes import dtype_name, element_of, inner_of, is_optional, is_sequence, to_numpy
from quantgraph.ir.graph import Graph
from quantgraph.ir.shapes import format_shape
from quantgraph.ir.tensor import NON_TENSOR_VALUES, OptionalValue, SequenceValue, TensorInfo


class CompiledModel:
    """Call with positional arrays (in ``input_names`` order) or one dict; returns the outputs in model order.

    Inputs are validated before anything runs: unknown or missing names, and wrong rank, dims or dtype raise
    InputError (a ValueError) naming the input and what was expected. Symbolic dims (e.g. a batch ``N``) bind to
    the first size seen in a call and must agree across inputs.
    """

    def __init__(self, graph: Graph, lowered: list | None = None, opt_level: int = 0,
                 optimized_from: dict[str, int] | None = None, pass_reports: list | None = None,
                 compile_seconds: dict[str, float] | None = None, quantization: Any = None):
        """``lowered`` is ``compiler.lower.lower(graph)`` (a kernel per node); None runs the reference interpreter.
        ``quantization`` is the ``QuantPlan`` the graph was quantized by (None: fp32, or quantized elsewhere)."""
        self.graph = graph
        self.opt_level = opt_level
        self.optimized_from = optimized_from
        self.pass_reports = list(pass_reports or [])
        self._inputs: list[TensorInfo] = [graph.tensors[t] for t in graph.inputs]
        self._lowered: list | None = lowered
        self._plans: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.compile_seconds: dict[str, float] = dict(compile_seconds or {})
        self._last_profile: dict[str, Any] | None = None
        #: the quantizer's decisions (``compiler.quantize.QuantPlan``) when compiled with quantize="int8"
        self.quantization = quantization
        #: what the quantizer started from (``quantize.sensitivity.QuantSource``): for ``quantization_report``
        self.quant_source: Any = None
        #: the trials of ``compile(accuracy_target=...)`` (``quantize.search.SearchResult``), else None
        self.accuracy_search: Any = None
        #: the graph ``export_onnx`` writes, in standard ONNX ops: the imported graph (fp32) or the QDQ graph the
        #: quantizer wrote (int8); None: ``graph`` itself (a CompiledModel built by hand)
        self.export_graph: Graph | None = None
        #: sha256 of the model compiled (file / bytes / ModelProto), None for an ir.Graph
        self.source_sha256: str | None = None
        #: set by ``quantgraph.load``: the artifact's manifest, its quantization summary, fusions and saved report
        self.manifest: dict[str, Any] | None = None
        self.saved_quantization: dict[str, Any] | None = None
        self.fusions_saved: dict[str, int] = {}
        self.saved_report: dict[str, Any] | None = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def lowered(self) -> list | None:
        """The kernel chosen per node (``compiler.lower.lower``); None when the reference interpreter runs."""
        return self._lowered

    def input_info(self) -> list[TensorInfo]:
        return list(self._inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        feeds = self._feeds(args, kwargs)
        out = self._execute(feeds)
        return [_user_value(out[t]) for t in self.graph.outputs]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on a dict of inputs; returns ``{output name: array}``."""
        return dict(zip(self.graph.outputs, self(dict(feeds))))

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._lowered is None:
            # with verification on (always in tests) every computed value is checked against its inferred type
            return interpreter.run(self.graph, feeds, check_types=config.get().verify)
        key = tuple(_shape_key(feeds[t]) for t in self.graph.inputs)
        if key not in self._plans and config.get().progress:  # a new plan's first run may JIT-compile kernels
            from quantgraph.kernels.progress import jit_progress

            with jit_progress():
                return self._run_plan(feeds)
        return self._run_plan(feeds)

    def _run_plan(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan = self.plan_for(feeds)
        # our kernels use both cores (see kernels/fp32/threads.py); NaN/inf are values here, as in the reference
        with single_threaded_blas(), np.errstate(all="ignore"):
            return dict(zip(self.graph.outputs, plan.run([feeds[t] for t in self.graph.inputs])))

    def plan_for(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The execution plan for these inputs' shapes (built and cached on the first call with new shapes)."""
        key = tuple(_shape_key(feeds[t]) for t in self.graph.inputs)
        plan = self._plans.get(key)
        if plan is None:
            from quantgraph.compiler.plan import build_plan
            from quantgraph.kernels.fp32.threads import configure_threads

            configure_threads(config.get().threads)
            with self._lock:
                t0 = time.perf_counter()
                plan = build_plan(self.graph, self._lowered or [], dict(zip(self.graph.inputs, key)))
                self.compile_seconds[f"plan{key}"] = time.perf_counter() - t0
                self._plans[key] = plan
        return plan

    @property
    def plans(self) -> dict[tuple, Any]:
        """Plans built so far, keyed by the input-shape signature."""
        return dict(self._plans)

    def profile(self, *args: Any, repeats: int = 5, **kwargs: Any) -> dict[str, Any]:
        """Time every step of the plan for these inputs (after one warm-up run); returns per-node and per-op seconds.

        At opt_level 0 (interpreter) the whole run is timed as one entry.
        """
        feeds = self._feeds(args, kwargs)
        if self._lowered is None:
            self._execute(feeds)
            best = min(_timed(lambda: self._execute(feeds)) for _ in range(max(1, repeats)))
            prof = {"total": best, "per_node": {}, "per_op": {"interpreter": best}, "kernels": {}}
        else:
            plan = self.plan_for(feeds)
            ordered = [feeds[t] for t in self.graph.inputs]
            with single_threaded_blas():
                plan.run(ordered)
                secs = plan.profile(ordered, repeats=repeats)
            per_op: dict[str, float] = {}
            kernels: dict[str, set] = {}
            for ln, sec, kname in zip(plan.nodes, secs, plan.kernels):
                per_op[ln.node.op] = per_op.get(ln.node.op, 0.0) + sec
                kernels.setdefault(ln.node.op, set()).add(kname)
            prof = {"total": sum(secs), "per_node": {ln.node.name: s for ln, s in zip(plan.nodes, secs)},
                    "per_op": per_op, "kernels": {k: sorted(v) for k, v in kernels.items()}}
        self._last_profile = prof
        return prof

    def quantization_report(self, data: Any = None, sensitivity: bool = True) -> Any:
        """Per quantized unit, the error its quantization adds (alone, and with everything before it quantized),
        its scales and ranges, worst flagged; over ``data`` or the calibration batches
        (``compiler/quantize/sensitivity.py``)."""
        from quantgraph.compiler.quantize.sensitivity import quantization_report

        return quantization_report(self, data, sensitivity)

    def save(self, path: str | os.PathLike, report: dict | None = None) -> str:
        """Save to the directory ``path`` (graph JSON, tensors .npz, manifest with checksums; atomic): reload with
        ``quantgraph.load(path)``, no recalibration (``compiler/artifact.py``). ``report``: a
        ``compiler.report_data.collect`` dict kept for ``quantgraph report``."""
        from quantgraph.compiler.artifact import save

        return save(self, path, report=report)

    def export_onnx(self, path: str | os.PathLike) -> str:
        """Write the model as an ONNX file (fp32 ops, or QuantizeLinear/DequantizeLinear around them for a quantized
        model) that onnxruntime loads; returns the path (``frontends/onnx/exporter.py``)."""
        from quantgraph.frontends.onnx.exporter import export_onnx

        return export_onnx(self.export_graph if self.export_graph is not None else self.graph, path)

    def summary(self) -> str:
        """A text report: op counts before/after optimisation, fusions applied, kernels per op type, and time per op
        type from the last ``profile()`` run."""
        from quantgraph.compiler.report import format_summary

        return format_summary(self)

    # -- input validation -------------------------------------------------------------------------------------
    def _feeds(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return validate_feeds(self._inputs, args, kwargs)

    def __repr__(self) -> str:  # noqa: D105
        ins = ", ".join(f"{i.name}: {i.describe()}" for i in self._inputs)
        return f"CompiledModel({self.graph.name}, inputs=[{ins}], {len(self.graph)} nodes, opt_level={self.opt_level})"


def _shape_key(value: Any) -> tuple[int, ...] | None:
    """A plan is made per input-shape signature; a sequence or optional input has no shape (None)."""
    return None if isinstance(value, NON_TENSOR_VALUES) else np.shape(value)


def _user_value(value: Any) -> Any:
    """What a caller gets back: arrays as they are, a sequence as a list of arrays, an optional as its value or None
    (as onnxruntime returns them)."""
    if isinstance(value, SequenceValue):
        return list(value.items)
    if isinstance(value, OptionalValue):
        return None if value.value is None else _user_value(value.value)
    return value


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def validate_feeds(inputs: Sequence[TensorInfo], args: Sequence[Any],
                   kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inputs given positionally (in ``inputs`` order), as one dict or by keyword, checked against ``inputs``:
    unknown or missing names, and wrong rank, dims or dtype raise InputError naming the input and what was expected.
    Returns ``{name: array}``."""
    names = [i.name for i in inputs]
    if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
        given = dict(args[0])
    elif args and kwargs:
        raise InputError("pass inputs either positionally or by name, not both")
    elif kwargs:
        given = dict(kwargs)
    else:
        if len(args) != len(names):
            raise InputError(f"model takes {len(names)} input(s) ({', '.join(names)}); got {len(args)}")
        given = dict(zip(names, args))
    unknown = [k for k in given if k not in names]
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are "
                         f"{', '.join(map(repr, names))}")
    missing = [k for k in names if k not in given]
    if missing:
        raise InputError(f"missing input(s) {', '.join(map(repr, missing))}; the model's inputs are "
                         f"{', '.join(map(repr, names))}")
    bound: dict[str, tuple[int, str]] = {}
    feeds = {}
    for info in inputs:
        feeds[info.name] = _check_input(info, given[info.name], bound)
    return feeds


def _check_sequence(info: TensorInfo, value: Any) -> SequenceValue:
    elem = element_of(info.dtype)
    if isinstance(value, SequenceValue):
        value = value.items
    if not isinstance(value, (list, tuple)):
        raise InputError(f"input '{info.name}' is a {type(value).__name__}; expected a list of {elem} arrays "
                         f"({info.dtype})")
    items = []
    for i, v in enumerate(value):
        arr = v if isinstance(v, np.ndarray) else np.asarray(v, dtype=to_numpy(elem))
        if dtype_name(arr) != elem:
            raise InputError(f"input '{info.name}' item {i} has dtype {arr.dtype}; expected {elem} ({info.dtype})")
        items.append(arr)
    return SequenceValue(tuple(items), elem)


def _check_input(info: TensorInfo, value: Any, bound: dict[str, tuple[int, str]]) -> Any:
    if is_sequence(info.dtype):
        return _check_sequence(info, value)
    if is_optional(info.dtype):  # None: empty
        inner = inner_of(info.dtype)
        if isinstance(value, OptionalValue):
            value = value.value
        held = None if value is None else _check_input(TensorInfo(info.name, None, inner), value, bound)
        return OptionalValue(held, inner)
    want = f"{info.dtype}{format_shape(info.shape)}"
    if isinstance(value, np.ndarray):
        arr = value
        try:
            got_dtype = dtype_name(arr)
        except TypeError:
            got_dtype = str(arr.dtype)
        if got_dtype != info.dtype:
            raise InputError(f"input '{info.name}' has dtype {arr.dtype}; expected {want}")
    else:  # python scalars and lists take the declared dtype
        try:
            arr = np.asarray(value, dtype=to_numpy(info.dtype))
        except (TypeError, ValueError) as exc:
            raise InputError(f"input '{info.name}' cannot be converted to {info.dtype}: {exc}") from None
    if info.shape is None:
        return arr
    if arr.ndim != len(info.shape):
        raise InputError(f"input '{info.name}' has shape {tuple(arr.shape)} (rank {arr.ndim}); expected rank "
                         f"{len(info.shape)}: {want}")
    for axis, (d, s) in enumerate(zip(info.shape, arr.shape)):
        if isinstance(d, int) and d != s:
            raise InputError(f"input '{info.name}' has shape {tuple(arr.shape)}; dim {axis} must be {d}: {want}")
        if isinstance(d, str):
            if d in bound and bound[d][0] != s:
                size, by = bound[d]
                raise InputError(f"input '{info.name}' has shape {tuple(arr.shape)}; dim {axis} ('{d}') is {s} "
                                 f"but '{d}' = {size} from input '{by}'")
            bound.setdefault(d, (s, info.name))
    return arr
