"""``python -m quantgraph.bench model --qdq``: a QDQ ResNet-50 on the int8 kernels vs onnxruntime, and our fp32.

The bench ResNet-50 (``bench/models.py``) goes through onnxruntime's recommended flow: ``quant_pre_process``
(shape inference, Conv+BatchNorm folding) then ``quantize_static`` (QDQ format, per-channel, QUInt8 activations,
QInt8 weights, MinMax calibration on a few seeded random batches). In one run the same QDQ file is compiled by
quantgraph (no calibration: the file carries every scale) and run by onnxruntime; our fp32 compile of the float
model runs next to them. Reported: median latency per batch, the ISA rung, the kernels the QDQ model's nodes ran
on, and the SQNR of the int8 outputs against our fp32 output.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np


def calibration_batches(model: Any, count: int = 8, batch: int = 1, seed: int = 100) -> list[dict[str, np.ndarray]]:
    """The seeded calibration feed dicts every int8 backend of the bench sees (seeds ``seed .. seed + count - 1``)."""
    from quantgraph.bench.models import sample_inputs

    return [sample_inputs(model, batch=batch, seed=seed + i) for i in range(count)]


def ort_quantize_static(model: Any, batches: list[dict[str, np.ndarray]], workdir: str,
                        name: str = "model") -> Any:
    """onnxruntime's recommended static flow for any float model: ``quant_pre_process`` (shape inference,
    Conv+BatchNorm folding) then ``quantize_static`` (QDQ, per-channel, QUInt8 activations, QInt8 weights, MinMax)
    calibrated on ``batches``. Returns the QDQ ModelProto; the files are left in ``workdir``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre, qdq = (os.path.join(workdir, f"{name}{s}.onnx") for s in ("", "_pre", "_qdq"))
    onnx.save(model, fp32)
    quant_pre_process(fp32, pre)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(pre, qdq, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(qdq)


def ort_quantize_dynamic(model: Any, workdir: str, name: str = "model") -> Any:
    """onnxruntime dynamic quantization (QInt8 weights, activation ranges computed per call): its usual choice for
    transformers. ``quant_pre_process`` first, as for the static flow."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre, dyn = (os.path.join(workdir, f"{name}{s}.onnx") for s in ("", "_pre", "_dyn"))
    onnx.save(model, fp32)
    quant_pre_process(fp32, pre)
    quantize_dynamic(pre, dyn, weight_type=QuantType.QInt8)
    return onnx.load(dyn)


def quantize_resnet50(workdir: str, calib_batches: int = 4, image: int = 224) -> tuple[Any, Any]:
    """(float model, QDQ model) for the bench ResNet-50; the QDQ file is also left in ``workdir``."""
    from quantgraph.bench.models import resnet50

    model = resnet50(batch="N", image=image)
    qdq = ort_quantize_static(model, calibration_batches(model, calib_batches), workdir, "resnet50")
    return model, qdq


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``got`` against ``ref`` in dB."""
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def kernel_counts(cm: Any) -> dict[str, dict[str, int]]:
    """op -> kernel -> node count of a compiled model (what ran int8, what fell back)."""
    out: dict[str, dict[str, int]] = {}
    for ln in cm._lowered or []:
        name = ln.kernel.name if ln.kernel is not None else "reference"
        out.setdefault(ln.node.op, {}).setdefault(name, 0)
        out[ln.node.op][name] += 1
    return out


def run(args: Any, threads: int, median_ms: Callable[..., float]) -> int:
    from quantgraph import config
    from quantgraph.bench.common import ort_available, ort_session
    from quantgraph.bench.models import sample_inputs
    from quantgraph.compiler.api import compile as qg_compile
    from quantgraph.kernels.target import select_isa

    if not ort_available():
        print("--qdq needs onnxruntime (onnxruntime.quantization makes the QDQ model)")
        return 2
    budget = 1.0 if args.quick else 3.0
    batches = [1] if args.quick else [1, 16]
    with tempfile.TemporaryDirectory() as tmp, config.override(threads=threads):
        t0 = time.perf_counter()
        model, qdq = quantize_resnet50(tmp)
        quant_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cm_q = qg_compile(qdq)
        compile_q = time.perf_counter() - t0
        cm_f = qg_compile(model)
        sess = None if args.no_ort else ort_session(qdq, threads)
        isa = select_isa()
        if not args.json:
            print(f"QDQ ResNet-50 (quantize_static: QDQ, per-channel, u8/s8, MinMax; quantized in {quant_s:.1f}s), "
                  f"{threads} thread(s), median; ISA rung {isa}; load average {os.getloadavg()[0]:.2f}")
            print(f"{'batch':>5s} {'int8 ms':>9s} {'ort int8':>9s} {'ours/ort':>8s} {'fp32 ms':>9s} "
                  f"{'int8/fp32':>9s} {'SQNR dB':>8s} {'ort SQNR':>8s}")
        for batch in batches:
            feeds = sample_inputs(model, batch=batch, seed=batch)
            x = feeds["input"]
            ours = cm_q(x)[0]
            ref = cm_f(x)[0]
            row: dict[str, Any] = {"model": "resnet50_qdq", "batch": batch, "isa": isa, "threads": threads,
                                   "int8_ms": round(median_ms(lambda: cm_q(x), budget), 3),
                                   "fp32_ms": round(median_ms(lambda: cm_f(x), budget), 3),
                                   "sqnr_db": round(sqnr_db(ref, ours), 2), "compile_s": round(compile_q, 2)}
            if sess is not None:
                row["ort_int8_ms"] = round(median_ms(lambda: sess.run(None, feeds), budget), 3)
                row["ort_sqnr_db"] = round(sqnr_db(ref, sess.run(None, feeds)[0]), 2)
                row["ratio"] = round(row["int8_ms"] / row["ort_int8_ms"], 3)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                ort_s = (f"{row['ort_int8_ms']:9.2f} {row['ratio']:8.2f}" if sess is not None
                         else f"{'-':>9s} {'-':>8s}")
                print(f"{batch:5d} {row['int8_ms']:9.2f} {ort_s} {row['fp32_ms']:9.2f} "
                      f"{row['int8_ms'] / row['fp32_ms']:9.2f} {row['sqnr_db']:8.1f} "
                      f"{row.get('ort_sqnr_db', float('nan')):8.1f}", flush=True)
        counts = kernel_counts(cm_q)
        if args.json:
            print(json.dumps({"model": "resnet50_qdq", "kernels": counts}))
        else:
            print("kernels of the QDQ model (op: kernel x nodes): " + "; ".join(
                f"{op}: " + ", ".join(f"{k} x{v}" for k, v in sorted(ks.items())) for op, ks in sorted(counts.items())))
            if args.summary:
                cm_q.profile(sample_inputs(model, batch=1)["input"])
                print(cm_q.summary())
    return 0
