"""ONNX converters for control flow (If, Loop, Scan, SequenceMap) and the sequence and optional ops their bodies
use.

Branches and bodies arrive already imported (``importer._import_subgraph``) as ir.Graphs; the values they read
from enclosing scopes are their ``captures``, which the node lists as its trailing inputs (``ir/subgraph.py``).
"""
from __future__ import annotations

from typing import Any

from quantgraph.frontends.onnx.context import ConvertContext
from quantgraph.frontends.onnx.dtypes import ir_dtype, type_dtype
from quantgraph.frontends.onnx.registry import onnx_op
from quantgraph.ir.graph import Graph


@onnx_op("If", since=1)
def If(g: ConvertContext, cond: str, *, then_branch: Graph, else_branch: Graph) -> Any:
    return g.add("If", [cond, *then_branch.captures, *else_branch.captures], outputs=len(then_branch.outputs),
                 then_branch=then_branch, else_branch=else_branch)


@onnx_op("Loop", since=1)
def Loop(g: ConvertContext, M: str | None = None, cond: str | None = None, *v_initial: str, body: Graph) -> Any:
    return g.add("Loop", [M, cond, *v_initial, *body.captures], outputs=len(body.outputs) - 1, body=body)


@onnx_op("Scan", since=9)
def Scan(g: ConvertContext, *inputs: str, body: Graph, num_scan_inputs: int, scan_input_axes: Any = None,
         scan_input_directions: Any = None, scan_output_axes: Any = None, scan_output_directions: Any = None) -> Any:
    return g.add("Scan", [*inputs, *body.captures], outputs=len(body.outputs), body=body,
                 num_scan_inputs=num_scan_inputs, scan_input_axes=scan_input_axes,
                 scan_input_directions=scan_input_directions, scan_output_axes=scan_output_axes,
                 scan_output_directions=scan_output_directions)


@onnx_op("Scan", since=8)
def Scan_8(g: ConvertContext, sequence_lens: str | None = None, *inputs: str, body: Graph, num_scan_inputs: int,
           directions: Any = None) -> Any:
    """Opset 8: axis 0 of every input is a batch, scanned along axis 1; ``sequence_lens`` limits each batch."""
    if sequence_lens:
        raise g.unsupported("Scan-8 with sequence_lens is not supported; export with opset 9 or later")
    return g.add("Scan", [*inputs, *body.captures], outputs=len(body.outputs), body=body,
                 num_scan_inputs=num_scan_inputs, scan_input_directions=directions, batched=1)


@onnx_op("SequenceMap", since=17)
def SequenceMap(g: ConvertContext, input_sequence: str, *additional_inputs: str, body: Graph) -> Any:
    return g.add("SequenceMap", [input_sequence, *additional_inputs, *body.captures], outputs=len(body.outputs),
                 body=body)


@onnx_op("SequenceEmpty", since=11)
def SequenceEmpty(g: ConvertContext, *, dtype: int | None = None) -> Any:
    return g.add("SequenceEmpty", [], dtype="float32" if dtype is None else ir_dtype(dtype, "attribute dtype"))


@onnx_op("SequenceConstruct", since=11)
def SequenceConstruct(g: ConvertContext, *inputs: str) -> Any:
    return g.add("SequenceConstruct", list(inputs))


@onnx_op("SequenceInsert", since=11)
def SequenceInsert(g: ConvertContext, input_sequence: str, tensor: str, position: str | None = None) -> Any:
    return g.add("SequenceInsert", [input_sequence, tensor, position])


@onnx_op("SequenceErase", since=11)
def SequenceErase(g: ConvertContext, input_sequence: str, position: str | None = None) -> Any:
    return g.add("SequenceErase", [input_sequence, position])


@onnx_op("SequenceAt", since=11)
def SequenceAt(g: ConvertContext, input_sequence: str, position: str) -> Any:
    return g.add("SequenceAt", [input_sequence, position])


@onnx_op("SequenceLength", since=11)
def SequenceLength(g: ConvertContext, input_sequence: str) -> Any:
    return g.add("SequenceLength", [input_sequence])


@onnx_op("ConcatFromSequence", since=11)
def ConcatFromSequence(g: ConvertContext, input_sequence: str, *, axis: int, new_axis: int = 0) -> Any:
    return g.add("ConcatFromSequence", [input_sequence], axis=axis, new_axis=new_axis)


@onnx_op("SplitToSequence", since=11)
def SplitToSequence(g: ConvertContext, input: str, split: str | None = None, *, axis: int = 0,
                    keepdims: int = 1) -> Any:
    return g.add("SplitToSequence", [input, split], axis=axis, keepdims=keepdims)


@onnx_op("Optional", since=15)
def Optional(g: ConvertContext, input: str | None = None, *, type: Any = None) -> Any:
    return g.add("Optional", [input], type=None if type is None else type_dtype(type, "attribute type"))


@onnx_op("OptionalHasElement", since=15)
def OptionalHasElement(g: ConvertContext, input: str | None = None) -> Any:
    return g.add("OptionalHasElement", [input])


@onnx_op("OptionalGetElement", since=15)
def OptionalGetElement(g: ConvertContext, input: str) -> Any:
    return g.add("OptionalGetElement", [input])
