"""The ``quantgraph`` command: ``demo``, ``inspect MODEL`` and ``run MODEL --input name=file.npy``.

Errors a user can cause (a QuantgraphError, or a ValueError for bad inputs) print as one line,
``quantgraph: error: ...``, and exit with status 2 like argparse's own usage errors. ``QUANTGRAPH_DEBUG=1`` shows
the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

import numpy as np

from quantgraph import __version__, config
from quantgraph.compiler.api import DEFAULT_OPT_LEVEL
from quantgraph.errors import QuantgraphError

#: how many leading values of each output ``run`` prints
SHOW_VALUES = 8


def _cmd_demo(args: argparse.Namespace) -> int:
    from quantgraph.demo import run_demo

    run_demo(args.model, batch=args.batch, repeats=args.repeats, opt_level=args.opt_level)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from quantgraph.frontends.onnx import load_onnx
    from quantgraph.ir import format_graph

    graph = load_onnx(args.model)
    print(format_graph(graph, show_consts=args.show_consts))
    counts = graph.op_counts()
    print(f"\nop counts ({len(graph)} nodes):")
    width = max((len(k) for k in counts), default=0)
    for op_name, n in counts.items():
        print(f"  {op_name.ljust(width)}  {n}")
    return 0


def _parse_inputs(specs: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``name=file.npy`` pairs (a bare ``file.npy`` is allowed when the model has one input) -> arrays."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(input_names) != 1:
                raise ValueError(f"--input '{spec}' has no name; use NAME=FILE.npy (the model's inputs: "
                                 f"{', '.join(input_names)})")
            name, file = input_names[0], spec
        if name in feeds:
            raise ValueError(f"--input gives '{name}' more than once")
        if not os.path.isfile(file):
            raise ValueError(f"--input {name}: file '{file}' does not exist")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--input {name}: '{file}' is not a readable .npy array: {exc}") from None
        if not isinstance(feeds[name], np.ndarray):
            raise ValueError(f"--input {name}: '{file}' holds several arrays (.npz); give one .npy per input")
    return feeds


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "output"


def _cmd_run(args: argparse.Namespace) -> int:
    import quantgraph

    compiled = quantgraph.compile(args.model, opt_level=args.opt_level)
    feeds = _parse_inputs(args.input, compiled.input_names)
    outputs = compiled.run(feeds)
    if args.save_outputs:
        try:
            os.makedirs(args.save_outputs, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--save-outputs: cannot create directory '{args.save_outputs}': {exc}") from None
    for name, value in outputs.items():
        arr = np.asarray(value)
        flat = arr.reshape(-1)[:SHOW_VALUES]
        more = ", ..." if arr.size > SHOW_VALUES else ""
        values = np.array2string(flat, precision=4, separator=", ", max_line_width=10_000)[1:-1]
        print(f"{name}: {arr.dtype}{tuple(arr.shape)}  [{values}{more}]")
        if args.save_outputs:
            file = os.path.join(args.save_outputs, _safe_filename(name) + ".npy")
            np.save(file, arr, allow_pickle=False)
            print(f"  saved {file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``quantgraph`` command."""
    parser = argparse.ArgumentParser(prog="quantgraph", description="Neural-network graph compiler for CPUs.")
    parser.add_argument("--version", action="version", version=f"quantgraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="compile and time the bundled digits model (or --model) on bundled data",
                          description="Import, compile and run a small classifier on the bundled digits test set; "
                                      "print accuracy, latency and throughput next to onnxruntime's.")
    demo.add_argument("--model", metavar="PATH", help="an ONNX classifier with one float32 (N, 1, 8, 8) input "
                                                      "(default: the bundled digits_cnn.onnx)")
    demo.add_argument("--opt-level", type=int, choices=range(4), default=DEFAULT_OPT_LEVEL,
                      help=f"compile() opt_level (default {DEFAULT_OPT_LEVEL})")
    demo.add_argument("--repeats", type=_positive, default=20, help="timed runs per measurement (default 20)")
    demo.add_argument("--batch", type=_positive, default=64, help="throughput batch size (default 64)")
    demo.set_defaults(func=_cmd_demo)

    inspect = sub.add_parser("inspect", help="print an ONNX model's imported graph and op counts",
                             description="Import an ONNX model and print the graph, one line per node, and op counts.")
    inspect.add_argument("model", metavar="MODEL", help="path to an .onnx file")
    inspect.add_argument("--show-consts", action="store_true", help="also list the constants (weights)")
    inspect.set_defaults(func=_cmd_inspect)

    run = sub.add_parser("run", help="compile a model and run it on .npy inputs",
                         description="Compile an ONNX model, run it on .npy inputs and print the outputs.")
    run.add_argument("model", metavar="MODEL", help="path to an .onnx file")
    run.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                     help="an input array; repeat for each input (NAME= may be left out for one-input models)")
    run.add_argument("--opt-level", type=int, choices=range(4), default=DEFAULT_OPT_LEVEL,
                     help=f"compile() opt_level (default {DEFAULT_OPT_LEVEL})")
    run.add_argument("--save-outputs", metavar="DIR", help="write each output to DIR/<output name>.npy")
    run.set_defaults(func=_cmd_run)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``quantgraph`` command line; returns 0 on success, raises ``SystemExit(2)`` on a user error."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (QuantgraphError, ValueError) as exc:
        if config.get().debug:
            raise
        print(f"quantgraph: error: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # NOTE: `quantgraph inspect m.onnx | head` closes stdout early; that is not an error worth a traceback
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
