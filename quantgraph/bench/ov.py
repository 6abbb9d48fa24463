"""OpenVINO rows of ``bench model``: ``openvino.convert_model`` of the float ONNX file, fp32 as is and int8 through
``nncf.quantize`` with its defaults on the bench's calibration batches. Imported lazily: without ``openvino`` and
``nncf`` the rows say so and the bench goes on."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable

import numpy as np


def available() -> str | None:
    """None when openvino and nncf import, else the reason the rows are skipped."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as e:
        return f"not installed ({e.name}); pip install openvino nncf"
    return None


def convert(model: Any, workdir: str, name: str = "model") -> Any:
    """An ``openvino.Model`` of an ONNX ModelProto (through a file, as a user would hand it over)."""
    import onnx
    import openvino as ov

    path = os.path.join(workdir, f"{name}_ov.onnx")
    onnx.save(model, path)
    return ov.convert_model(path)


def quantize(ov_model: Any, batches: list[dict[str, np.ndarray]]) -> Any:
    """``nncf.quantize`` with its defaults (8-bit, MIXED preset, min-max + fast bias correction) on ``batches``."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    # NOTE: nncf draws progress bars on stdout, which would break --json; send them to stderr
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(ov_model, nncf.Dataset(batches))


def runner(ov_model: Any, feeds: dict[str, np.ndarray], threads: int, f32: bool = False) -> Callable[[], np.ndarray]:
    """A call of the model compiled for CPU at the static shapes of ``feeds`` (as our plans are bound per shape)
    with ``threads`` inference threads; returns the first output (a copy: the request reuses its buffers).

    ``f32`` forces fp32 arithmetic: on AMX / AVX512-BF16 hosts the CPU plugin's default inference precision is
    bf16, so an "fp32" row would otherwise measure bf16 (and an int8 model's float parts run bf16 by default)."""
    import openvino as ov

    m = ov_model.clone()
    m.reshape({name: list(a.shape) for name, a in feeds.items()})
    props: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
    if f32:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(m, "CPU", props)
    req = compiled.create_infer_request()

    def run() -> np.ndarray:
        req.infer(feeds)
        return np.array(req.get_output_tensor(0).data)

    return run
