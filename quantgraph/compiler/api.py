"""quantgraph.compile(): model in, CompiledModel out.

    import -> optimize (passes, O0..O3) -> [quantize: next] -> lower (a kernel per node, weights packed) -> plan

Plans (buffers bound for one input-shape signature) are built on the first call with new shapes.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence, Union

import onnx

from quantgraph import config
from quantgraph.compiler.executable import CompiledModel
from quantgraph.compiler.lower import lower
from quantgraph.compiler.passes.infer_shapes import infer_shapes
from quantgraph.compiler.pipeline import optimize
from quantgraph.errors import InputError
from quantgraph.ir.graph import Graph
from quantgraph.ir.shapes import normalize_shape
from quantgraph.ir.verify import verify

#: NHWC (the layout pass of O3) is faster than NCHW for our conv kernels: see kernels/fp32/threads.py, README
DEFAULT_OPT_LEVEL = 3

ModelLike = Union[Graph, str, os.PathLike, bytes, onnx.ModelProto]


def to_graph(model: ModelLike) -> Graph:
    """An ir.Graph for a Graph (copied), an ONNX path, bytes or ModelProto."""
    if isinstance(model, Graph):
        return model.copy()
    from quantgraph.frontends.onnx import import_onnx

    return import_onnx(model)


def compile(model: ModelLike, opt_level: int = DEFAULT_OPT_LEVEL,
            input_shapes: Mapping[str, Sequence[Any]] | None = None, **options: Any) -> CompiledModel:
    """Compile a model for this CPU.

    Args:
        model: an ``ir.Graph``, an ONNX file path, serialized bytes or an ``onnx.ModelProto``.
        opt_level: 0 runs the reference interpreter on the imported graph (the oracle); 1 adds cleanup passes
            (constant folding, identity/dead-code elimination) and compiled kernels; 2 adds BatchNorm folding,
            LayerNorm/GELU recognition and Conv/MatMul epilogue fusion; 3 adds the NHWC layout pass.
        input_shapes: override declared input shapes, e.g. ``{"x": ("N", 3, 224, 224)}`` for a dynamic batch.
    """
    if options:
        raise TypeError(f"compile() got unknown option(s) {sorted(options)}")
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0..3, got {opt_level}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = to_graph(model)
    if input_shapes:
        _override_input_shapes(graph, input_shapes)
    if config.get().verify:
        verify(graph)
    seconds["import"] = time.perf_counter() - t0
    before = graph.op_counts()

    t0 = time.perf_counter()
    graph, reports = optimize(graph, opt_level)
    seconds["optimize"] = time.perf_counter() - t0

    lowered = None
    if opt_level > 0:
        t0 = time.perf_counter()
        lowered = lower(graph)
        seconds["lower"] = time.perf_counter() - t0
    return CompiledModel(graph, lowered, opt_level=opt_level, optimized_from=before, pass_reports=reports,
                         compile_seconds=seconds)


def _override_input_shapes(graph: Graph, input_shapes: Mapping[str, Sequence[Any]]) -> None:
    for name, shape in input_shapes.items():
        if name not in graph.inputs:
            raise InputError(f"input_shapes names '{name}', which is not an input; inputs: {graph.inputs}")
        graph.set_tensor(graph.tensors[name].with_(shape=normalize_shape(shape)))
    infer_shapes(graph)
