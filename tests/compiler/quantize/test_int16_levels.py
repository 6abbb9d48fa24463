"""int16 precision groundwork: the overflow-free level count and the precision= errors."""
from __future__ import annotations

import numpy as np
import pytest

from quantgraph.compiler.quantize.quantize import QuantizeOptions, int16_qmax


@pytest.mark.parametrize("k", [1, 9, 64, 576, 4608, 16384, 1 << 20])
def test_int16_qmax_never_overflows_int32(k: int) -> None:
    q = int16_qmax(k)
    assert 1 <= q <= 32767
    assert k * 127 * q <= 2 ** 31 - 1          # worst case fits
    if q < 32767:
        assert k * 127 * (q + 1) > 2 ** 31 - 1  # and is the largest that does


def test_int16_qmax_examples_and_bias_headroom() -> None:
    assert int16_qmax(9) == 32767
    assert int16_qmax(4608) == (2 ** 31 - 1) // (4608 * 127)
    assert int16_qmax(4608) > 28 * 127          # still far finer than u8 over the same range
    assert int16_qmax(4608, bias_bound=10 ** 8) < int16_qmax(4608)
    # the worst-case accumulator in int64 stays within int32 with the bias added
    k, b = 4608, 10 ** 8
    q = int16_qmax(k, b)
    x = np.full(k, -q, np.int64)
    w = np.full(k, -127, np.int64)
    assert int(x @ w) + b <= 2 ** 31 - 1
    with pytest.raises(ValueError):
        int16_qmax(0)


def test_precision_bogus_errors() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        QuantizeOptions(precision=(("x", "bogus"),))
