"""The subcommands of ``quantgraph``: each takes the parsed arguments and returns an exit status."""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any

import numpy as np

from quantgraph.cli.inputs import UsageError, calibration_batches, open_model, parse_inputs, parse_shapes, \
    random_inputs

#: how many leading values of each output ``run`` prints
SHOW_VALUES = 8
#: calibration batches the compile-time report measures per-layer error over (the first ones)
REPORT_BATCHES = 4


def cmd_demo(args: argparse.Namespace) -> int:
    from quantgraph.demo import run_demo

    run_demo(args.model, batch=args.batch, repeats=args.repeats, opt_level=args.opt_level)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    import quantgraph
    from quantgraph.frontends.onnx import load_onnx

    shapes = parse_shapes(args.shape)
    if args.quantize is None:
        for flag in ("calib", "accuracy_target"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --quantize int8")
        if args.exclude:
            raise UsageError("--exclude needs --quantize int8")
    elif args.calib is None:
        raise UsageError("--quantize int8 needs --calib DATA.npz|DIR (sample inputs to calibrate on)")
    if not os.path.isfile(args.model):
        from quantgraph.errors import ModelLoadError

        raise ModelLoadError(f"model file '{args.model}' does not exist")
    kwargs: dict[str, Any] = {}
    batches = None
    if args.quantize:
        names = list(load_onnx(args.model).inputs)
        batches = calibration_batches(args.calib, names, args.calib_batch)
        kwargs = dict(quantize=args.quantize, calibration=batches, calib_mode=args.calib_mode,
                      exclude=tuple(args.exclude), progress=not args.quiet)
        if args.accuracy_target is not None:
            kwargs["accuracy_target"] = args.accuracy_target
    t0 = time.perf_counter()
    model = quantgraph.compile(args.model, opt_level=args.opt_level, input_shapes=shapes or None, **kwargs)
    seconds = time.perf_counter() - t0
    report = None
    t0 = time.perf_counter()
    if not args.no_report:
        from quantgraph.compiler.report_data import collect

        data = batches[:REPORT_BATCHES] if batches else None
        report = collect(model, data=data, feeds=data[0] if data else None, sensitivity=args.sensitivity)
    path = model.save(args.output, report=report)
    _print_compiled(model, seconds, path, time.perf_counter() - t0 if report is not None else None)
    return 0


def _print_compiled(model: Any, seconds: float, path: str, report_s: float | None) -> None:
    from quantgraph.compiler.artifact import quantization_summary

    q = quantization_summary(model)
    before = sum((model.optimized_from or {}).values())
    cal = model.compile_seconds.get("calibrate")
    line = (f"compiled '{model.graph.name}': {before} -> {len(model.graph)} nodes in {seconds:.1f} s"
            + (f" (calibration {cal:.1f} s)" if cal is not None else ""))
    if q.get("mode") == "int8":
        nodes = q["nodes"]
        line += f"; int8 {nodes.get('int8', 0)}, int16 {nodes.get('int16', 0)}, fp32 {nodes.get('fp32', 0)} nodes"
    print(line)
    if model.accuracy_search is not None:
        print(str(model.accuracy_search).splitlines()[0])
    if report_s is not None:
        print(f"measured the per-layer report in {report_s:.1f} s (skip with --no-report)")
    print(f"saved {path}")


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "output"


def cmd_run(args: argparse.Namespace) -> int:
    model = open_model(args.model, args.opt_level, parse_shapes(args.shape))
    if not args.input:
        raise UsageError(f"run needs --input (the model's inputs: {', '.join(model.input_names)})")
    feeds = parse_inputs(args.input, model.input_names)
    outputs = model.run(feeds)
    for name, value in outputs.items():
        arr = np.asarray(value)
        flat = arr.reshape(-1)[:SHOW_VALUES]
        more = ", ..." if arr.size > SHOW_VALUES else ""
        values = np.array2string(flat, precision=4, separator=", ", max_line_width=10_000)[1:-1]
        print(f"{name}: {arr.dtype}{tuple(arr.shape)}  [{values}{more}]")
    if args.output:
        from quantgraph.fileio import atomic_savez

        atomic_savez(args.output, {k: np.asarray(v) for k, v in outputs.items()})
        print(f"saved {args.output}")
    if args.save_outputs:
        try:
            os.makedirs(args.save_outputs, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--save-outputs: cannot create directory '{args.save_outputs}': {exc}") from None
        for name, value in outputs.items():
            file = os.path.join(args.save_outputs, _safe_filename(name) + ".npy")
            np.save(file, np.asarray(value), allow_pickle=False)
            print(f"  saved {file}")
    return 0


def _median_ms(fn: Any, repeats: int) -> float:
    fn()  # warm-up (plans, JIT)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _ort_session(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """onnxruntime on the ONNX file (or, for an artifact, on its export), or (None, why not)."""
    from quantgraph.bench.common import ort_available, ort_session

    if not ort_available():
        return None, "onnxruntime is not installed"
    import onnx

    if os.path.isdir(args.model):
        from quantgraph.errors import QuantgraphError
        from quantgraph.frontends.onnx.exporter import to_model_proto

        try:
            proto = to_model_proto(model.export_graph if model.export_graph is not None else model.graph)
        except QuantgraphError as exc:
            return None, f"the artifact does not export to ONNX: {exc}"
        what = "onnxruntime (the artifact's ONNX export)"
    else:
        proto = onnx.load(args.model)
        what = "onnxruntime"
    threads = args.threads or os.cpu_count() or 1
    try:
        return ort_session(proto, threads), what
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return None, f"onnxruntime cannot load it: {str(exc).splitlines()[0]}"


def cmd_bench(args: argparse.Namespace) -> int:
    model = open_model(args.model, args.opt_level, parse_shapes(args.shape))
    if not args.input and not args.random_inputs:
        raise UsageError("bench needs --input NAME=FILE.npy or --random-inputs")
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [1]
    if any(b < 1 for b in batches):
        raise UsageError(f"--batch takes sizes >= 1; got {args.batch}")
    session, ort_what = _ort_session(args, model) if not args.no_ort else (None, "--no-ort")
    rows = []
    for b in batches:
        feeds = parse_inputs(args.input, model.input_names) if args.input else random_inputs(model, b)
        shape = {k: list(v.shape) for k, v in feeds.items()}
        ours = _median_ms(lambda: model.run(feeds), args.repeats)
        row: dict[str, Any] = {"batch": b, "shapes": shape, "quantgraph_ms": round(ours, 4)}
        if session is not None:
            names = {i.name for i in session.get_inputs()}
            ort_feeds = {k: v for k, v in feeds.items() if k in names}
            row["onnxruntime_ms"] = round(_median_ms(lambda: session.run(None, ort_feeds), args.repeats), 4)
            row["speedup_vs_onnxruntime"] = round(row["onnxruntime_ms"] / ours, 3)
        rows.append(row)
        if args.input:
            break  # the given inputs fix the batch
    from quantgraph.compiler.artifact import quantization_summary

    result = {"model": args.model, "precision": quantization_summary(model).get("mode"), "rows": rows,
              "onnxruntime": ort_what if session is not None else f"not run: {ort_what}"}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{model.graph.name} ({result['precision']}), median of {args.repeats} runs; {result['onnxruntime']}")
    head = f"{'batch':>6}  {'quantgraph ms':>14}" + (f"  {'onnxruntime ms':>15}  {'speedup':>8}" if session else "")
    print(head)
    for r in rows:
        line = f"{r['batch']:>6}  {r['quantgraph_ms']:>14.3f}"
        if session is not None:
            line += f"  {r['onnxruntime_ms']:>15.3f}  {r['speedup_vs_onnxruntime']:>7.2f}x"
        print(line)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from quantgraph.compiler.report import format_inspect
    from quantgraph.ir import format_graph

    model = open_model(args.model, args.opt_level, parse_shapes(args.shape))
    if args.graph:
        shown = model.export_graph if model.export_graph is not None else model.graph
        print(format_graph(shown, show_consts=args.show_consts))
        print()
    print(format_inspect(model, source=args.model))
    if args.svg:
        from quantgraph.compiler.visualize import model_to_dot, write_picture

        written = write_picture(model_to_dot(model), args.svg)
        print(f"\nwrote {written}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from quantgraph.compiler.report_data import collect, format_text

    if os.path.isdir(args.model):
        if args.calib is not None:
            raise UsageError("--calib applies to an ONNX model; an artifact's report was measured when it was "
                             "compiled")
        model = open_model(args.model, 3)
        report = model.saved_report
        if report is None:
            report = collect(model)
            print("(this artifact was saved without a report: compile it with the quantgraph command to measure "
                  "per-layer error; showing the structure only)")
    else:
        if args.calib is None:
            raise UsageError("report MODEL.onnx needs --calib DATA.npz|DIR to quantize and measure it (or give a "
                             "saved artifact directory)")
        import quantgraph
        from quantgraph.frontends.onnx import load_onnx

        batches = calibration_batches(args.calib, list(load_onnx(args.model).inputs), args.calib_batch)
        model = quantgraph.compile(args.model, opt_level=args.opt_level, quantize="int8", calibration=batches,
                                   progress=not args.quiet)
        data = batches[:REPORT_BATCHES]
        report = collect(model, data=data, feeds=data[0])
    print(format_text(report))
    if args.html:
        from quantgraph.compiler.html_report import write_html

        print(f"\nwrote {write_html(report, args.html)}")
    if args.json:
        from quantgraph.fileio import atomic_write

        atomic_write(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
    return 0
