"""The QDQ graph as it is saved and exported: integer weights only.

``insert_qdq`` writes each weight as an int8 constant read by a DequantizeLinear, but the float weights it quantized
stay in the graph's tensor table, unread, until a later pass drops them; the copy kept for ``export_onnx`` and
artifacts carried them too, so a saved EfficientNet-Lite1 held its fp32 weights beside the int8 ones (28.7 MB, now
7.1 MB; the exported QDQ ONNX 5.7 MB against the fp32 model's 21.7 MB). :func:`integer_weights` drops unread
constants and folds any QuantizeLinear of constants (a weight quantized in the graph rather than by insert_qdq)
into its integer result, the form onnxruntime's quantizer writes.
"""
from __future__ import annotations

from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import get_op


def integer_weights(graph: Graph) -> int:
    """Fold QuantizeLinear of constants into integer constants and drop unread constants (in place); returns how
    many QuantizeLinear were folded."""
    folded = 0
    for n in graph.topo():
        if n.op != "QuantizeLinear" or any(t in graph.outputs for t in n.outputs if t):
            continue
        if not all(not t or graph.tensors[t].const is not None for t in n.inputs):
            continue
        (value,) = get_op(n.op).run_reference(n, [graph.tensors[t].const if t else None for t in n.inputs])
        c = graph.add_const(value, name=graph.unique_name(f"{n.outputs[0]}/int"))
        graph.replace_uses(n.outputs[0], c)
        graph.erase(n)
        folded += 1
    graph.remove_unused_constants()
    return folded
