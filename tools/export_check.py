"""Export check: compile a benchmark model to int8, write it with ``CompiledModel.export_onnx`` and run the file in
onnxruntime, with graph optimizations off (``ORT_DISABLE_ALL``: DQ -> float op -> Q, the QDQ semantics exactly) and
on (``ORT_ENABLE_ALL``: its fused int8 kernels, which saturate u8 x s8 products on hosts without VNNI).

    python tools/export_check.py                            # ResNet-50 and BERT-4 int8, batch 1
    python tools/export_check.py --models bert --batch 4 --oracle --keep /tmp/exported

Per model one row per backend on a held-out batch (the bench's seed 999; calibration on the bench's 8 seeded
batches): max |x - ours int8| in output steps and relative to max |ours|, max |x - QDQ oracle| in output steps
(``--oracle``), and SQNR of the output against our fp32.
The output step is the output's DequantizeLinear scale, else (float outputs: logits, LayerNorm) the u8 step of the
fp32 output's range. ``--oracle`` adds our reference interpreter on the exported QDQ graph (slow for ResNet-50).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import quantgraph  # noqa: E402
from quantgraph.bench.models import bert_encoder, resnet50, sample_inputs  # noqa: E402
from quantgraph.bench.qdq import calibration_batches, sqnr_db  # noqa: E402
from quantgraph.ir import interpreter  # noqa: E402
from quantgraph.kernels import target  # noqa: E402

MODELS = {"resnet50": ("ResNet-50", lambda: resnet50(batch="N")),
          "bert": ("BERT-4 (384, seq 128)", lambda: bert_encoder(layers=4, hidden=384, seq=128))}


def _ort(path: str, feeds: dict[str, np.ndarray], optimize: bool, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else
                                   ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _step(cm: Any, fp32: np.ndarray) -> float:
    g, out = cm.export_graph, cm.output_names[0]
    p = g.producer(out)
    if p is not None and p.op == "DequantizeLinear":
        return float(np.max(g.tensors[p.inputs[1]].const))
    return (max(float(fp32.max()), 0.0) - min(float(fp32.min()), 0.0)) / 255.0


def check(key: str, args: argparse.Namespace, workdir: str) -> list[dict[str, Any]]:
    label, build = MODELS[key]
    model = build()
    calib = calibration_batches(model, args.calib)
    feeds = sample_inputs(model, batch=args.batch, seed=999)
    t0 = time.perf_counter()
    fp32_cm = quantgraph.compile(model)
    cm = quantgraph.compile(model, quantize="int8", calibration=calib)
    compile_s = time.perf_counter() - t0
    fp32, ours = fp32_cm(feeds)[0], cm(feeds)[0]
    t0 = time.perf_counter()
    path = cm.export_onnx(os.path.join(workdir, f"{key}_int8.onnx"))
    export_s = time.perf_counter() - t0
    import onnx

    proto = onnx.load(path)
    info = (f"{label}: exported {os.path.getsize(path) / 1e6:.1f} MB, opset {proto.opset_import[0].version}, IR "
            f"{proto.ir_version}, {len(proto.graph.node)} nodes in {export_s:.2f} s (compile + calibrate "
            f"{compile_s:.1f} s); int8 initializers: "
            f"{sum(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)}")
    fp32_path = fp32_cm.export_onnx(os.path.join(workdir, f"{key}_fp32.onnx"))
    fp32_rel = max(float(np.abs(_ort(fp32_path, feeds, optimize, args.threads) - fp32).max()) for optimize in
                   (False, True)) / float(np.abs(fp32).max())
    print(info + f"; fp32 export: max |ort - ours| / max |ours| {fp32_rel:.1e}", flush=True)
    step = _step(cm, fp32)
    scale = float(np.abs(ours).max())
    oracle = interpreter.run(cm.export_graph, feeds)[cm.output_names[0]] if args.oracle else None
    backends = [("quantgraph int8 (ours)", ours),
                ("onnxruntime ORT_DISABLE_ALL", _ort(path, feeds, False, args.threads)),
                ("onnxruntime ORT_ENABLE_ALL" + ("" if target.has("avx512vnni") else " (no VNNI: saturates)"),
                 _ort(path, feeds, True, args.threads))]
    if oracle is not None:
        backends.append(("quantgraph QDQ interpreter", oracle))
    rows = []
    for name, got in backends:
        d = float(np.abs(got.astype(np.float64) - ours).max())
        row = {"model": label, "backend": name, "steps": d / step, "rel": d / scale, "sqnr": sqnr_db(fp32, got),
               "oracle": None if oracle is None else float(np.abs(got.astype(np.float64) - oracle).max()) / step}
        rows.append(row)
    for r in rows:
        r["step"] = step
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--batch", type=int, default=1, help="held-out batch size (default 1)")
    p.add_argument("--calib", type=int, default=8, help="calibration batches (batch 1, the bench's seeds)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--oracle", action="store_true", help="also our reference interpreter on the exported QDQ graph")
    p.add_argument("--keep", metavar="DIR", help="write the exported files here (default: a temporary directory)")
    args = p.parse_args(argv)
    keys = args.models.split(",")
    unknown = sorted(set(keys) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    try:
        import onnxruntime
    except ImportError:
        p.error("onnxruntime is not installed")
    print(f"onnxruntime {onnxruntime.__version__}, host ISA rungs {', '.join(target.available_isas())}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        rows = [r for k in keys for r in check(k, args, workdir)]
    head = (f"| {'model':22s} | {'backend':40s} | vs ours: max diff / step | vs ours: max diff / max abs | "
            f"vs QDQ oracle: max diff / step | SQNR vs fp32 dB |")
    print("\n" + head + "\n|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        orc = "-" if r["oracle"] is None else f"{r['oracle']:.3f}"
        print(f"| {r['model']:22s} | {r['backend']:40s} | {r['steps']:24.3f} | {r['rel']:27.2e} | {orc:>30s} | "
              f"{r['sqnr']:15.2f} |")
    print("\noutput steps: " + ", ".join(f"{r['model']} {r['step']:.4g}" for r in rows if r["steps"] == 0.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
