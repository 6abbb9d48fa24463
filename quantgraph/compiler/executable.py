"""CompiledModel: a compiled graph you can call with arrays."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from quantgraph import config
from quantgraph.errors import InputError
from quantgraph.ir import interpreter
from quantgraph.ir.dtypes import dtype_name, to_numpy
from quantgraph.ir.graph import Graph
from quantgraph.ir.shapes import format_shape
from quantgraph.ir.tensor import TensorInfo


class CompiledModel:
    """Call with positional arrays (in ``input_names`` order) or one dict; returns the outputs in model order.

    Inputs are validated before anything runs: unknown or missing names, and wrong rank, dims or dtype raise
    InputError (a ValueError) naming the input and what was expected. Symbolic dims (e.g. a batch ``N``) bind to
    the first size seen in a call and must agree across inputs.
    """

    def __init__(self, graph: Graph, opt_level: int = 0):
        self.graph = graph
        self.opt_level = opt_level
        self._inputs: list[TensorInfo] = [graph.tensors[t] for t in graph.inputs]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def input_info(self) -> list[TensorInfo]:
        return list(self._inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        feeds = self._feeds(args, kwargs)
        out = self._execute(feeds)
        return [out[t] for t in self.graph.outputs]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on a dict of inputs; returns ``{output name: array}``."""
        return dict(zip(self.graph.outputs, self(dict(feeds))))

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # with verification on (always in tests) every computed value is checked against its inferred type
        return interpreter.run(self.graph, feeds, check_types=config.get().verify)

    # -- input validation -------------------------------------------------------------------------------------
    def _feeds(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = self.input_names
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
        for info in self._inputs:
            feeds[info.name] = self._check(info, given[info.name], bound)
        return feeds

    @staticmethod
    def _check(info: TensorInfo, value: Any, bound: dict[str, tuple[int, str]]) -> np.ndarray:
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

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}: {i.describe()}" for i in self._inputs)
        return f"CompiledModel({self.graph.name}, inputs=[{ins}], {len(self.graph)} nodes, opt_level={self.opt_level})"
