"""JSON (+ .npz for arrays) round trip of a Graph. No pickle: object/bfloat16 arrays are stored explicitly."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from quantgraph.errors import ModelLoadError
from quantgraph.ir.dtypes import to_numpy
from quantgraph.ir.graph import Graph
from quantgraph.ir.node import Node
from quantgraph.ir.tensor import QuantParams, TensorInfo

FORMAT = "quantgraph-ir"
VERSION = 1


class Arrays:
    """Collects arrays for the .npz side and returns JSON references to them; an array object put twice (two graphs
    sharing a constant) is stored once."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._seen: dict[int, tuple[np.ndarray, str]] = {}   # id -> (the array, kept alive so the id stays its)

    def put(self, arr: np.ndarray, dtype: str | None = None) -> dict[str, Any]:
        if arr.dtype == object:  # strings: JSON holds them (np.save would need pickle)
            return {"strings": arr.astype(str).tolist(), "shape": list(arr.shape)}
        seen = self._seen.get(id(arr))
        if seen is not None and seen[0] is arr:
            return {"npz": seen[1], "dtype": str(arr.dtype)}
        key = f"a{len(self.arrays)}"
        stored = arr.view(np.uint16) if str(arr.dtype) == "bfloat16" else arr
        self.arrays[key] = np.array(stored, order="C", copy=True)  # (ascontiguousarray would make 0-d arrays 1-d)
        self._seen[id(arr)] = (arr, key)
        return {"npz": key, "dtype": str(arr.dtype)}


def _get(ref: dict[str, Any], arrays: Any) -> np.ndarray:
    if "strings" in ref:
        return np.array(ref["strings"], dtype=object).reshape(ref["shape"])
    arr = arrays[ref["npz"]]
    if ref["dtype"] == "bfloat16":
        arr = arr.view(to_numpy("bfloat16"))
    return arr


def _enc_attr(v: Any, store: Arrays) -> Any:
    if isinstance(v, Graph):  # a branch or loop body: nested, sharing the arrays store
        return {"graph": to_dict(v, store)[0]}
    if isinstance(v, np.ndarray):
        return {"array": store.put(v)}
    if isinstance(v, tuple):
        return {"tuple": [_enc_attr(x, store) for x in v]}
    return v


def _dec_attr(v: Any, arrays: Any) -> Any:
    if isinstance(v, dict):
        if "array" in v:
            arr = _get(v["array"], arrays)
            arr.setflags(write=False)
            return arr
        if "tuple" in v:
            return tuple(_dec_attr(x, arrays) for x in v["tuple"])
        if "graph" in v:
            return from_dict(v["graph"], arrays)
    return v


def _enc_shape(shape: Any) -> Any:
    return None if shape is None else list(shape)


def _dec_shape(shape: Any) -> Any:
    return None if shape is None else tuple(shape)


def to_dict(graph: Graph, store: Arrays | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The graph as a JSON-able dict plus the arrays it references (collected in ``store``, a new one by default,
    which several graphs may share)."""
    store = Arrays() if store is None else store
    tensors = []
    for name, info in graph.tensors.items():
        entry: dict[str, Any] = {"name": name, "shape": _enc_shape(info.shape), "dtype": info.dtype}
        if info.const is not None:
            entry["const"] = store.put(info.const)
        if info.qparams is not None:
            entry["qparams"] = info.qparams.to_json()
        tensors.append(entry)
    nodes = [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
              "attrs": {k: _enc_attr(v, store) for k, v in n.attrs.items()}} for n in graph.topo()]
    doc = {"format": FORMAT, "version": VERSION, "name": graph.name, "inputs": list(graph.inputs),
           "outputs": list(graph.outputs), "tensors": tensors, "nodes": nodes}
    if graph.captures:
        doc["captures"] = list(graph.captures)
    return doc, store.arrays


def from_dict(doc: dict[str, Any], arrays: Any) -> Graph:
    if doc.get("format") != FORMAT:
        raise ModelLoadError(f"not a quantgraph IR document (format={doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise ModelLoadError(f"quantgraph IR version {doc.get('version')} is not supported (want {VERSION})")
    g = Graph(doc["name"])
    infos: dict[str, TensorInfo] = {}
    for e in doc["tensors"]:
        const = None
        if "const" in e:
            const = _get(e["const"], arrays)
            const.setflags(write=False)
        qp = QuantParams.from_json(e["qparams"]) if "qparams" in e else None
        infos[e["name"]] = TensorInfo(e["name"], _dec_shape(e["shape"]), e["dtype"], const, qp)
    produced = {t for n in doc["nodes"] for t in n["outputs"] if t}
    for name, info in infos.items():
        if name not in produced:
            g.tensors[name] = info
    g.inputs = list(doc["inputs"])
    g.captures = list(doc.get("captures", ()))
    for n in doc["nodes"]:
        node = Node(n["name"], n["op"], tuple(n["inputs"]), tuple(n["outputs"]),
                    {k: _dec_attr(v, arrays) for k, v in n["attrs"].items()})
        g.insert_node(node, [infos[t] if t else None for t in node.outputs])
    g.set_outputs(doc["outputs"])
    return g


def save(graph: Graph, path: str | os.PathLike) -> tuple[str, str]:
    """Write ``<path>`` (JSON; '.json' is appended when missing) and the arrays beside it as ``.npz``."""
    path = os.fspath(path)
    if not path.endswith(".json"):
        path += ".json"
    npz = path[: -len(".json")] + ".npz"
    doc, arrays = to_dict(graph)
    doc["arrays"] = os.path.basename(npz)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    np.savez(npz[: -len(".npz")] + ".tmp.npz", **arrays)
    os.replace(npz[: -len(".npz")] + ".tmp.npz", npz)  # write-then-rename: never leave a half-written artifact
    os.replace(tmp, path)
    return path, npz


def load(path: str | os.PathLike) -> Graph:
    """Read a graph written by :func:`save`."""
    path = os.fspath(path)
    if not path.endswith(".json") and os.path.exists(path + ".json"):
        path += ".json"
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ModelLoadError(f"graph file '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{path}' is not a quantgraph IR JSON file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelLoadError(f"'{path}' is not a quantgraph IR document (format="
                             f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    npz = os.path.join(os.path.dirname(path), str(doc.get("arrays", "")))
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            return from_dict(doc, {k: arrays[k] for k in arrays.files})
    except (FileNotFoundError, IsADirectoryError):
        raise ModelLoadError(f"array file '{npz}' of graph '{path}' does not exist") from None
