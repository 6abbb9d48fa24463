"""Conv fusions: Conv -> FusedConv, per-channel bias, residual (ResNet shortcut)."""
from __future__ import annotations

import numpy as np

from quantgraph.compiler.rules.conv import PAD_FOLDING, RULES
from quantgraph.ir.builder import GraphBuilder
from tests.compiler.test_pattern import apply, assert_same_outputs, ops

rng = np.random.default_rng(1)


def _w(*shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 0.3).astype(dtype)


def _conv(gb, x, cin=3, cout=4, bias=True, w_const=True, **attrs):
    w = gb.const(_w(cout, cin, 3, 3)) if w_const else gb.input("w", (cout, cin, 3, 3))
    b = gb.const(_w(cout)) if bias else None
    return gb.op("Conv", x, w, b, pads=(1, 1, 1, 1), **attrs)


def test_conv_to_fused() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 3, 6, 6))
    before, after, p = apply(gb.output(_conv(gb, x, strides=(2, 2))).build(), RULES.only("conv_to_fused"))
    assert ops(after) == ["FusedConv"] and p.counts == {"conv_to_fused": 1}
    n = after.topo()[0]
    assert n.attrs["strides"] == (2, 2) and n.attrs["activation"] == "none" and n.attrs["layout"] == "NCHW"
    assert_same_outputs(before, after)


def test_conv_to_fused_refusals() -> None:
    gb = GraphBuilder("t")
    x = gb.input("x", (1, 3, 6, 6), "float64")
    w = gb.const(_w(4, 3, 3, 3, dtype=np.float64))
    _, _, p = apply(gb.output(gb.op("Conv", x, w)).build(), RULES.only("conv_to_fused"))
    assert p.reasons("conv_to_fused") == ["input is float64; FusedConv is float32"]
    gb = GraphBuilder("t")
    x = gb.input("x", (1, 3, 6))
    _, _, p = apply(gb.output(gb.op("Conv", x, gb.const(_w(4, 3, 3)))).build(), RULES.only("conv_to_fused"))
    assert p.reasons("conv_to_fused") == ["input has rank 3; FusedConv is 2-D (rank 4)"]
    gb = GraphBuilder("t")
    x = gb.input("x", (1, 3, 6, 6))
    _, after, p = apply(gb.output(_conv(gb, x, w_const=False)).build(), RULES.only("conv_to_fused"))
    assert p.reasons("conv_to_fused") == ["W is not a constant"] and ops(after) == ["Conv"]


def _fused(gb, x, bias=True, **attrs):
    b = gb.const(_w(4)) if bias else None
    return gb.op("FusedConv", x, gb.const(_w(4, 3, 3, 3)), b, pads=(1, 1, 1, 1), **attrs)


def test_conv_add_bias_per_channel_shapes() -> None:
    for shape in ((1, 4, 1, 1), (4, 1, 1), (1,)):
        for bias in (True, False):
            gb = GraphBuilder("t")
            x = gb.input("x", (2, 3, 5, 5))
            y = gb.op("Add", gb.const(_w(*shape)), _fused(gb, x, bias))
            before, after, p = apply(gb.output(y).build(), RULES.only("conv_add_bias"))
            assert ops(after) == ["FusedConv"] and p.counts == {"conv_add_bias": 1}, shape
            assert_same_outputs(before, after)


def test_conv_add_bias_refusals() -> None:
    def run(c_shape, **attrs):
        gb = GraphBuilder("t")
        x = gb.input("x", (2, 5, 5, 3) if attrs.get("layout") == "NHWC" else (2, 3, 5, 5))
        y = gb.op("Add", _fused(gb, x, **attrs), gb.const(_w(*c_shape)))
        _, after, p = apply(gb.output(y).build(), RULES.only("conv_add_bias"))
        assert "Add" in ops(after)
        return p.reasons("conv_add_bias")[0]

    assert "already has an epilogue" in run((4, 1, 1), activation="relu")
    assert run((1,), layout="NHWC") == "the conv is not NCHW"
    assert "is not one value per output channel" in run((5,))
    assert "has more dims than the output" in run((1, 1, 1, 1, 1))
    gb = GraphBuilder("t")
    x, b = gb.input("x", (2, 3, 5, 5)), gb.input("b", (4,))
    y = gb.op("Add", gb.op("FusedConv", x, gb.const(_w(4, 3, 3, 3)), b, pads=(1, 1, 1, 1)), gb.const(_w(4, 1, 1)))
    _, _, p = apply(gb.output(y).build(), RULES.only("conv_add_bias"))
    assert p.reasons("conv_add_bias") == ["the conv bias is not a constant"]


def test_conv_residual() -> None:
    for bias in (True, False):
        gb = GraphBuilder("t")
        x, z = gb.input("x", ("N", 3, 5, 5)), gb.input("z", ("N", 4, 5, 5))
        y = gb.op("Relu", gb.op("Add", z, _fused(gb, x, bias)))
        before, after, p = apply(gb.output(y).build(), RULES.only("conv_residual"))
        assert ops(after) == ["FusedConv", "Relu"] and p.counts == {"conv_residual": 1}
        assert after.topo()[0].inputs[3] == "z"
        assert_same_outputs(before, after)


def test_conv_residual_refusals() -> None:
    def run(z_shape=(2, 4, 5, 5), z_const=False, **attrs):
        gb = GraphBuilder("t")
        x = gb.input("x", (2, 3, 5, 5))
        z = gb.const(_w(*z_shape)) if z_const else gb.input("z", z_shape)
        _, after, p = apply(gb.output(gb.op("Add", _fused(gb, x, **attrs), z)).build(), RULES.only("conv_residual"))
        assert "Add" in ops(after)
        return p.reasons("conv_residual")[0]

    assert "already has an epilogue" in run(activation="relu")
    assert run(z_const=True) == "the other operand is a constant (a bias, not a residual)"
    assert "residual has shape (1, 4, 1, 1)" in run((1, 4, 1, 1))


def test_conv_residual_refuses_shared_conv_output() -> None:
    gb = GraphBuilder("t")
    x, z = gb.input("x", (2, 3, 5, 5)), gb.input("z", (2, 4, 5, 5))
    c = _fused(gb, x)
    g = gb.output(gb.op("Add", c, z), gb.op("Relu", c)).build()
    _, after, p = apply(g, RULES.only("conv_residual"))
    assert "Add" in ops(after) and any("also used by" in r for r in p.reasons("conv_residual"))


def _padded(pads, value=0.0, mode="constant", conv_pads=(1, 1, 1, 1)):
    gb = GraphBuilder("t")
    x = gb.input("x", ("N", 3, 6, 6))
    p = gb.op("Pad", x, gb.const(np.array(pads, np.int64)), gb.const(np.array(value, np.float32)), mode=mode)
    y = gb.op("Conv", p, gb.const(_w(4, 3, 3, 3)), gb.const(_w(4)), pads=conv_pads, strides=(2, 2))
    return gb.output(y).build()


def test_zero_pad_folds_into_the_conv() -> None:
    before, after, p = apply(_padded([0, 0, 1, 0, 0, 0, 2, 1]), PAD_FOLDING)
    assert ops(after) == ["Conv"] and p.counts == {"pad_into_conv": 1}
    assert after.topo()[0].attrs["pads"] == (2, 1, 3, 2)
    assert_same_outputs(before, after)
    before, after, _ = apply(_padded([0, 0, 1, 1, 0, 0, 1, 1], conv_pads=()), PAD_FOLDING)
    assert ops(after) == ["Conv"] and after.topo()[0].attrs["pads"] == (1, 1, 1, 1)
    assert_same_outputs(before, after)


def test_pad_folding_refusals() -> None:
    for graph, why in ((_padded([1, 0, 0, 0, 0, 0, 0, 0]), "batch or channel"),
                       (_padded([0, 0, 1, 1, 0, 0, 1, 1], value=1.0), "not 0"),
                       (_padded([0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"), "mode is reflect"),
                       (_padded([0, 0, -1, 0, 0, 0, 0, 0]), "crops")):
        _, after, p = apply(graph, PAD_FOLDING)
        assert ops(after) == ["Pad", "Conv"] and why in p.reasons("pad_into_conv")[0]
