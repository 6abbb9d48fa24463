"""The reference interpreter: runs any graph with each op's numpy reference. It is the test oracle."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from quantgraph.errors import GraphError, ShapeError
from quantgraph.ir.dtypes import dtype_name
from quantgraph.ir.graph import Graph
from quantgraph.ir.ops.registry import get_op
from quantgraph.ir.tensor import NON_TENSOR_VALUES

OnTensor = Callable[[str, np.ndarray], None]


def run(graph: Graph, feeds: Mapping[str, np.ndarray], on_tensor: OnTensor | None = None,
        outputs: Sequence[str] | None = None, check_types: bool = False) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` on ``feeds`` (graph input name -> array); returns the requested outputs by name.

    ``on_tensor(name, value)`` is called for every computed tensor (calibration observers hook in here).
    ``check_types`` compares every computed value's dtype and rank with the graph's recorded TensorInfo.
    """
    wanted = list(outputs if outputs is not None else graph.outputs)
    env: dict[str, np.ndarray] = {}
    for name in list(graph.inputs) + list(graph.captures):  # captures: outer-scope values of a subgraph
        if name not in feeds:
            what = "input" if name in graph.inputs else "outer-scope value"
            raise GraphError(f"graph {what} '{name}' was not fed")
        env[name] = feeds[name]
    order = graph.topo()
    last_use: dict[str, int] = {}
    for i, n in enumerate(order):
        for t in n.inputs:
            last_use[t] = i
    keep = set(wanted)
    for i, n in enumerate(order):
        args: list[np.ndarray | None] = []
        for t in n.inputs:
            if not t:
                args.append(None)
            elif t in env:
                args.append(env[t])
            else:
                info = graph.tensors.get(t)
                if info is None or info.const is None:
                    raise GraphError(f"input '{t}' has no value (not fed, not constant, not computed yet)",
                                     n.name, n.op)
                args.append(info.const)
        results = get_op(n.op).run_reference(n, args)
        for t, value in zip(n.outputs, results):
            if not t:
                continue
            if value is None:
                raise ShapeError(f"reference produced no value for output '{t}'", n.name, n.op)
            if check_types:
                _check(graph, n, t, value)
            env[t] = value
            if on_tensor is not None:
                on_tensor(t, value)
        for t in n.inputs:  # free intermediates as soon as nothing later reads them
            if t in env and last_use.get(t) == i and t not in keep and t not in feeds:
                del env[t]
    out: dict[str, np.ndarray] = {}
    for t in wanted:
        if t in env:
            out[t] = env[t]
        elif t in graph.tensors and graph.tensors[t].const is not None:
            out[t] = graph.tensors[t].const
        else:
            raise GraphError(f"output '{t}' was not computed")
    return out


def _check(graph: Graph, n, t: str, value: np.ndarray) -> None:
    info = graph.tensors[t]
    got = value.dtype if isinstance(value, NON_TENSOR_VALUES) else dtype_name(value)
    if isinstance(value, NON_TENSOR_VALUES):
        if got != info.dtype:
            raise ShapeError(f"output '{t}' is {got} but inference said {info.dtype}", n.name, n.op)
        return
    if got != info.dtype:
        raise ShapeError(f"output '{t}' is {got} but inference said {info.dtype}", n.name, n.op)
    if info.shape is not None:
        if value.ndim != len(info.shape) or any(isinstance(d, int) and d != s
                                                for d, s in zip(info.shape, value.shape)):
            raise ShapeError(f"output '{t}' has shape {value.shape} but inference said {info.shape}", n.name, n.op)
