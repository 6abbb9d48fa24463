"""JSON + .npz round trip of graphs: identity of structure, attributes and constants; no pickle."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from quantgraph.errors import ModelLoadError
from quantgraph.ir import GraphBuilder, QuantParams, load, save
from quantgraph.ir.interpreter import run


def _graph():
    gb = GraphBuilder("ser")
    x = gb.input("x", ("N", 3), "float32")
    w = gb.const(np.linspace(-1, 1, 3, dtype=np.float32), "w/weights:0")
    m = gb.const(np.array([True, False, True]), "mask")
    gb.const(np.float32(2.5), "scalar")  # 0-d arrays must stay 0-d
    s = gb.const(np.array(["a", "bc"], dtype=object), "labels")
    y = gb.op("Mul", x, w, name="mul")
    y = gb.op("LeakyRelu", y, alpha=0.25)
    z = gb.op("Where", m, y, x)
    g = gb.output(z).build()
    g.set_tensor(g.tensors["mul"].with_(qparams=QuantParams((0.1,), (128,), "uint8")))
    g.add_const(np.arange(6, dtype=np.int64).reshape(2, 3), "unused_i64")
    assert "labels" in g.tensors and s
    return g


def test_round_trip_is_identity(tmp_path) -> None:
    g = _graph()
    jpath, npz = save(g, tmp_path / "model")
    h = load(jpath)
    assert h.same_as(g)
    assert h.tensors["mul"].qparams == QuantParams((0.1,), (128,), "uint8")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(run(h, {"x": x})[h.outputs[0]], run(g, {"x": x})[g.outputs[0]])
    # arrays are plain .npy members (no pickled objects); strings live in the JSON
    with zipfile.ZipFile(npz) as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    doc = json.loads(jpath and open(jpath).read())
    assert any(t.get("const", {}).get("strings") == ["a", "bc"] for t in doc["tensors"])


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelLoadError, match="bad.json' is not a quantgraph IR JSON file"):
        load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelLoadError, match="not a quantgraph IR document"):
        load(other)
