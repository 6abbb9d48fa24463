"""Control flow: If, Loop, Scan and SequenceMap. Their branches and bodies are graph-valued attributes
(``ir/subgraph.py``); values a subgraph reads from the enclosing scopes are its captures, bound to the node's
trailing inputs."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from quantgraph.ir.dtypes import inner_of, is_optional, is_sequence, is_tensor
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.ops.registry import REQUIRED, op
from quantgraph.ir.shapes import Shape
from quantgraph.ir.subgraph import as_bool, captured, own_inputs, run_subgraph
from quantgraph.ir.tensor import SequenceValue, TensorInfo, TensorType


def merge_shapes(a: Shape, b: Shape) -> Shape:
    """The most precise shape both ``a`` and ``b`` satisfy (differing dims become unknown)."""
    if a is None or b is None or len(a) != len(b):
        return None
    return tuple(x if x == y else None for x, y in zip(a, b))


def _out_types(n: Node, g: Graph) -> list[TensorType]:
    return [g.tensors[t].type for t in g.outputs]


def _held(dtype: str) -> str:
    return inner_of(dtype) if is_optional(dtype) else dtype


def _check_dtype(n: Node, what: str, a: str, b: str) -> None:
    if a != b:
        raise n.error(f"{what} is {a} in one place and {b} in another; both must have one dtype")


# -- If ---------------------------------------------------------------------------------------------------------
if_ = op("If", inputs="cond captured*", outputs="outputs*",
         attrs={"then_branch": REQUIRED, "else_branch": REQUIRED},
         doc="Runs then_branch or else_branch (subgraphs without inputs) on a boolean scalar")


@if_.infer
def _(n: Node, cond: TensorInfo, *captures: TensorInfo) -> list[TensorType]:
    then, other = n.attrs["then_branch"], n.attrs["else_branch"]
    if len(then.outputs) != len(other.outputs):
        raise n.error(f"then_branch has {len(then.outputs)} outputs and else_branch {len(other.outputs)}; "
                      f"both branches must have as many outputs as the If")
    out = []
    for i, (a, b) in enumerate(zip(_out_types(n, then), _out_types(n, other))):
        _check_dtype(n, f"output {i}", a.dtype, b.dtype)
        out.append(TensorType(merge_shapes(a.shape, b.shape), a.dtype))
    return out


@if_.reference
def _(n: Node, cond: np.ndarray, *rest: Any) -> list[Any]:
    caps = captured(n, [cond, *rest])
    attr = "then_branch" if as_bool(cond) else "else_branch"
    return run_subgraph(n.attrs[attr], [], caps[attr])


# -- Loop -------------------------------------------------------------------------------------------------------
loop = op("Loop", inputs="M? cond? inputs*", outputs="outputs*", attrs={"body": REQUIRED},
          doc="body(iter_num, cond, v...) -> (cond, v..., scan...) while iter_num < M and cond")


def _loop_counts(n: Node) -> tuple[int, int]:
    body = n.attrs["body"]
    carried = len(body.inputs) - 2
    return carried, len(body.outputs) - 1 - carried


@loop.infer
def _(n: Node, m: TensorInfo | None, cond: TensorInfo | None, *rest: TensorInfo) -> list[TensorType]:
    body = n.attrs["body"]
    carried, scans = _loop_counts(n)
    if carried < 0 or scans < 0:
        raise n.error(f"body has {len(body.inputs)} inputs and {len(body.outputs)} outputs; Loop's body takes "
                      f"(iter_num, cond, v...) and returns (cond, v..., scan outputs...)")
    v_initial = own_inputs(n, [m, cond, *rest])[2:]
    if len(v_initial) != carried:
        raise n.error(f"{len(v_initial)} loop-carried inputs but the body carries {carried}")
    outs = _out_types(n, body)
    types = []
    for i, (v, o) in enumerate(zip(v_initial, outs[1:1 + carried])):
        # (an optional initial value may be carried on as what it holds: loop16_seq_none)
        _check_dtype(n, f"loop-carried value {i}", _held(v.dtype), _held(o.dtype))
        types.append(TensorType(merge_shapes(v.shape, o.shape) if is_tensor(o.dtype) else None, o.dtype))
    for o in outs[1 + carried:]:
        types.append(TensorType(None if o.shape is None else (None,) + tuple(o.shape), o.dtype))
    return types


#: runs a body on its inputs (positional) and captured values (by name); returns its outputs. The reference runs
#: the interpreter; ``compiler/lower.py`` hands the drivers a body compiled once.
BodyRunner = Callable[[Sequence[Any], dict], list]


def interpreted(body: Graph) -> BodyRunner:
    return lambda inputs, caps: run_subgraph(body, inputs, caps)


@loop.reference
def _(n: Node, m: np.ndarray | None, cond: np.ndarray | None, *rest: Any) -> list[Any]:
    return run_loop(n, [m, cond, *rest], interpreted(n.attrs["body"]))


def run_loop(n: Node, values: Sequence[Any], run_body: BodyRunner) -> list[Any]:
    """Loop's semantics on the node's input values (captures last), each iteration through ``run_body``."""
    body = n.attrs["body"]
    carried, scans = _loop_counts(n)
    m, cond = values[0], values[1]
    caps = captured(n, values)["body"]
    v = own_inputs(n, values)[2:]
    trips = None if m is None else int(np.asarray(m).reshape(-1)[0])
    keep = True if cond is None else as_bool(cond)
    parts: list[list[Any]] = [[] for _ in range(scans)]
    i = 0
    while keep and (trips is None or i < trips):
        outs = run_body([np.array(i, np.int64), np.array(keep), *v], caps)
        keep = as_bool(outs[0])
        v = outs[1:1 + carried]
        for k in range(scans):
            parts[k].append(outs[1 + carried + k])
        i += 1
    result = list(v)
    for k, t in enumerate(body.outputs[1 + carried:]):
        if parts[k]:
            result.append(np.stack(parts[k]))
        else:  # no iteration ran: an empty stack of the body's (static) element shape when known
            info = body.tensors[t]
            shape = tuple(d if isinstance(d, int) else 0 for d in info.shape) if info.shape is not None else ()
            result.append(np.zeros((0,) + shape, np.dtype(info.dtype)))
    return result


# -- Scan -------------------------------------------------------------------------------------------------------
scan = op("Scan", inputs="inputs+", outputs="outputs+",
          attrs={"body": REQUIRED, "num_scan_inputs": REQUIRED, "scan_input_axes": None,
                 "scan_input_directions": None, "scan_output_axes": None, "scan_output_directions": None,
                 "batched": 0},
          doc="body(states..., slices...) -> (states..., scan outputs...) over the scan axis; batched=1 is opset "
              "8's form (axis 0 of every input is a batch, scanned along axis 1)")


def _scan_attrs(n: Node) -> tuple[int, int, int, list[int], list[int], list[int], list[int]]:
    body = n.attrs["body"]
    m = n.attrs["num_scan_inputs"]
    states = len(body.inputs) - m
    k = len(body.outputs) - states
    in_axes = list(n.attrs["scan_input_axes"] or [0] * m)
    in_dirs = list(n.attrs["scan_input_directions"] or [0] * m)
    out_axes = list(n.attrs["scan_output_axes"] or [0] * k)
    out_dirs = list(n.attrs["scan_output_directions"] or [0] * k)
    return states, m, k, in_axes, in_dirs, out_axes, out_dirs


@scan.infer
def _(n: Node, *inputs: TensorInfo) -> list[TensorType]:
    body = n.attrs["body"]
    states, m, k, in_axes, _, out_axes, _ = _scan_attrs(n)
    own = own_inputs(n, inputs)
    if states < 0 or k < 0 or len(own) != states + m:
        raise n.error(f"{len(own)} inputs for a body of {len(body.inputs)} inputs and {len(body.outputs)} outputs "
                      f"with num_scan_inputs={m}; Scan takes (states..., scan inputs...)")
    batched = bool(n.attrs["batched"])
    steps: Any = None
    x = own[states] if m else None
    if x is not None and x.shape is not None:
        ax = (1 if batched else in_axes[0] % len(x.shape))
        steps = x.shape[ax]
    batch = () if not batched else ((own[0].shape or (None,))[0],)
    outs = _out_types(n, body)
    types = [TensorType(None if o.shape is None else batch + tuple(o.shape), o.dtype) for o in outs[:states]]
    for o, ax in zip(outs[states:], out_axes):
        if o.shape is None:
            types.append(TensorType(None, o.dtype))
            continue
        shape = list(o.shape)
        shape.insert(ax % (len(shape) + 1), steps)
        types.append(TensorType(batch + tuple(shape), o.dtype))
    return types


def _scan_once(n: Node, own: Sequence[np.ndarray], caps: dict[str, Any], in_axes: list[int],
               run_body: BodyRunner) -> list[np.ndarray]:
    body = n.attrs["body"]
    states, m, k, _, in_dirs, out_axes, out_dirs = _scan_attrs(n)
    s = list(own[:states])
    xs = [np.asarray(x) for x in own[states:]]
    axes = [a % x.ndim for a, x in zip(in_axes, xs)]
    steps = xs[0].shape[axes[0]] if xs else 0
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for t in range(steps):
        slices = [np.take(x, steps - 1 - t if d else t, axis=a) for x, a, d in zip(xs, axes, in_dirs)]
        outs = run_body([*s, *slices], caps)
        s = outs[:states]
        for j in range(k):
            parts[j].append(outs[states + j])
    result = list(s)
    for j, (p, ax, d) in enumerate(zip(parts, out_axes, out_dirs)):
        if d:
            p = p[::-1]
        y = np.stack(p) if p else np.zeros((0,), np.dtype(body.tensors[body.outputs[states + j]].dtype))
        result.append(np.moveaxis(y, 0, ax % y.ndim))
    return result


@scan.reference
def _(n: Node, *inputs: Any) -> list[np.ndarray]:
    return run_scan(n, inputs, interpreted(n.attrs["body"]))


def run_scan(n: Node, inputs: Sequence[Any], run_body: BodyRunner) -> list[np.ndarray]:
    """Scan's semantics on the node's input values (captures last), each step through ``run_body``."""
    caps = captured(n, inputs)["body"]
    own = own_inputs(n, inputs)
    states, m, k, in_axes, *_ = _scan_attrs(n)
    if not n.attrs["batched"]:
        return _scan_once(n, own, caps, in_axes, run_body)
    per = [_scan_once(n, [x[b] for x in own], caps, [0] * m, run_body)
           for b in range(np.asarray(own[0]).shape[0])]
    return [np.stack([r[j] for r in per]) for j in range(states + k)]


# -- SequenceMap ------------------------------------------------------------------------------------------------
sequence_map = op("SequenceMap", inputs="input_sequence additional_inputs*", outputs="out_sequence+",
                  attrs={"body": REQUIRED},
                  doc="body(item_i, extra...) per item of input_sequence; a sequence extra gives its item i, a tensor "
                      "itself; each body output is collected into a sequence")


@sequence_map.infer
def _(n: Node, seq: TensorInfo, *rest: TensorInfo) -> list[TensorType]:
    body = n.attrs["body"]
    own = own_inputs(n, [seq, *rest])
    if len(own) != len(body.inputs):
        raise n.error(f"{len(own)} inputs for a body of {len(body.inputs)}; SequenceMap feeds each input to one "
                      f"body input")
    if not is_sequence(seq.dtype):
        raise n.error(f"input_sequence is a {seq.dtype} tensor; SequenceMap expects a sequence")
    return [TensorType(None, f"seq({o.dtype})") for o in _out_types(n, body)]


@sequence_map.reference
def _(n: Node, seq: SequenceValue, *rest: Any) -> list[SequenceValue]:
    body = n.attrs["body"]
    values = [seq, *rest]
    caps = captured(n, values)["body"]
    own = own_inputs(n, values)
    parts: list[list[np.ndarray]] = [[] for _ in body.outputs]
    for i in range(len(seq)):
        args = [v.items[i] if isinstance(v, SequenceValue) else v for v in own]
        for k, o in enumerate(run_subgraph(body, args, caps)):
            parts[k].append(o)
    return [SequenceValue(tuple(p), body.tensors[t].dtype) for p, t in zip(parts, body.outputs)]
