"""The ``quantgraph`` command: ``compile``, ``run``, ``bench``, ``inspect``, ``report`` and ``demo``.

Exit status: 0 success, 1 a model or data error (a file that is missing or not what was expected, a model that does
not import or compile, inputs that do not fit), 2 a usage error (argparse's own, and option combinations that cannot
mean anything). Errors print as one line on stderr, ``quantgraph: error: ...``; ``--debug`` (or
``QUANTGRAPH_DEBUG=1``) shows the traceback instead. ``-v``/``-vv`` log INFO/DEBUG messages of the library on stderr,
``-q`` only errors.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from quantgraph import __version__, config
from quantgraph.cli import commands
from quantgraph.cli.inputs import UsageError
from quantgraph.compiler.api import DEFAULT_OPT_LEVEL
from quantgraph.errors import QuantgraphError

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
CALIB_MODES = ("auto", "minmax", "percentile", "entropy", "mse")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _common(p: argparse.ArgumentParser, opt_level: bool = True, shape: bool = True) -> None:
    """Options every subcommand takes."""
    g = p.add_argument_group("general")
    g.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-v INFO, -vv DEBUG) on stderr")
    g.add_argument("-q", "--quiet", action="store_true", help="log errors only; no progress bars")
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")
    g.add_argument("--threads", type=_positive, metavar="N", help="kernel threads (default: all cores)")
    g.add_argument("--isa", metavar="RUNG", help="force a kernel ISA rung (portable, avx2, avx512bw, avx512vnni, "
                                                 "amx; default: the host's best)")
    if opt_level:
        g.add_argument("--opt-level", type=int, choices=range(4), default=DEFAULT_OPT_LEVEL,
                       help=f"compile() opt_level for ONNX models (default {DEFAULT_OPT_LEVEL})")
    if shape:
        g.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...",
                       help="override an input's declared shape, e.g. x=N,3,224,224 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``quantgraph`` command."""
    parser = argparse.ArgumentParser(prog="quantgraph", description="Neural-network graph compiler for CPUs: "
                                     "compile, quantize to int8, run, benchmark and inspect ONNX models.")
    parser.add_argument("--version", action="version", version=f"quantgraph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("compile", help="compile (and quantize) an ONNX model into a saved artifact",
                       description="Compile an ONNX model for this CPU, optionally quantized to int8 after "
                                   "calibrating on sample inputs, and save it as an artifact directory that "
                                   "`quantgraph run/bench/inspect/report` and quantgraph.load() read.")
    c.add_argument("model", metavar="MODEL.onnx")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="artifact directory to write")
    c.add_argument("--quantize", choices=("int8",), help="quantize (default: fp32)")
    c.add_argument("--calib", metavar="DATA.npz|DIR", help="calibration inputs: an .npz with one array per input "
                   "(split into --calib-batch batches), or a directory of .npz/.npy files, one batch each")
    c.add_argument("--calib-batch", type=_positive, default=16, metavar="N", help="batch size (default 16)")
    c.add_argument("--calib-mode", choices=CALIB_MODES, default="auto", help="range selection (default auto)")
    c.add_argument("--exclude", action="append", default=[], metavar="NODE|OP|REGEX",
                   help="keep these nodes fp32 (repeatable)")
    c.add_argument("--accuracy-target", type=float, metavar="DB", help="keep the most harmful layers wider until "
                   "the output SQNR over the calibration data reaches DB")
    c.add_argument("--no-report", action="store_true", help="do not measure the per-layer report at compile time")
    c.add_argument("--sensitivity", action="store_true", help="the report also measures each layer's error at the "
                   "outputs with only it quantized (one model run per layer: about 10x slower)")
    _common(c)
    c.set_defaults(func=commands.cmd_compile)

    r = sub.add_parser("run", help="run an artifact or ONNX model on .npy inputs",
                       description="Run a saved artifact (or compile an ONNX model in fp32) on .npy inputs and "
                                   "print the outputs.")
    r.add_argument("model", metavar="OUT|MODEL.onnx")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array; repeat for each input (NAME= may be left out for one-input models, and "
                        "one .npz may hold all inputs by name)")
    r.add_argument("--output", metavar="Y.npz", help="write the outputs, by name, to an .npz")
    r.add_argument("--save-outputs", metavar="DIR", help="write each output to DIR/<output name>.npy")
    _common(r)
    r.set_defaults(func=commands.cmd_run)

    b = sub.add_parser("bench", help="time an artifact or ONNX model, onnxruntime side by side",
                       description="Median latency of quantgraph and (when installed) onnxruntime on the same "
                                   "inputs in the same run; for an artifact onnxruntime runs its ONNX export.")
    b.add_argument("model", metavar="OUT|MODEL.onnx")
    b.add_argument("--batch", metavar="B1,B2,...", help="batch sizes for symbolic batch dims (default 1)")
    b.add_argument("--random-inputs", action="store_true", help="seeded random inputs of the declared shapes")
    b.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy")
    b.add_argument("--repeats", type=_positive, default=20, help="timed runs per measurement (default 20)")
    b.add_argument("--no-ort", action="store_true", help="do not run onnxruntime")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    _common(b)
    b.set_defaults(func=commands.cmd_bench)

    i = sub.add_parser("inspect", help="what the compiler did: ops, fusions, precision, kernel and rung per node",
                       description="Compile an ONNX model (fp32) or load an artifact and print op counts before/"
                                   "after, fusions, and per node its precision, kernel and ISA rung.")
    i.add_argument("model", metavar="MODEL.onnx|OUT")
    i.add_argument("--graph", action="store_true", help="also print the source graph, one line per node")
    i.add_argument("--show-consts", action="store_true", help="with --graph: also list the constants (weights)")
    i.add_argument("--svg", metavar="GRAPH.svg", help="draw the graph before and after compilation (SVG through "
                   "Graphviz when installed, else DOT text)")
    _common(i)
    i.set_defaults(func=commands.cmd_inspect)

    rp = sub.add_parser("report", help="per-layer quantization error of an artifact (text, HTML, JSON)",
                        description="Print the per-layer error report saved with an artifact by `quantgraph "
                                    "compile` (or quantize an ONNX model with --calib and measure it).")
    rp.add_argument("model", metavar="OUT|MODEL.onnx")
    rp.add_argument("--html", metavar="REPORT.html", help="write a self-contained HTML page")
    rp.add_argument("--json", metavar="REPORT.json", help="write the report data as JSON")
    rp.add_argument("--calib", metavar="DATA.npz|DIR", help="for an ONNX model: calibration inputs")
    rp.add_argument("--calib-batch", type=_positive, default=16, metavar="N")
    _common(rp)
    rp.set_defaults(func=commands.cmd_report)

    d = sub.add_parser("demo", help="compile, quantize and time the bundled digits model on bundled data",
                       description="Import, compile and quantize a small classifier, run it on the bundled digits "
                                   "test set, and print fp32 and int8 accuracy and speed next to onnxruntime's.")
    d.add_argument("--model", metavar="PATH", help="an ONNX classifier with one float32 (N, 1, 8, 8) input "
                                                   "(default: the bundled digits_cnn.onnx)")
    d.add_argument("--repeats", type=_positive, default=20, help="timed runs per measurement (default 20)")
    d.add_argument("--batch", type=_positive, default=64, help="throughput batch size (default 64)")
    _common(d, shape=False)
    d.set_defaults(func=commands.cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def configure_logging(verbose: int, quiet: bool) -> None:
    """One stderr handler on the ``quantgraph`` logger (the library never adds one itself)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("quantgraph")
    for h in list(logger.handlers):
        if getattr(h, "_quantgraph_cli", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("quantgraph: %(levelname)s: %(message)s"))
    handler._quantgraph_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _fail(status: int, exc: BaseException, debug: bool) -> int:
    if debug:
        raise exc
    print(f"quantgraph: error: {_one_line(exc)}", file=sys.stderr)
    raise SystemExit(status) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``quantgraph`` command line; returns 0 on success, raises ``SystemExit(1 | 2)`` on an error."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    debug = args.debug or config.get().debug > 0
    knobs: dict[str, object] = {"progress": not args.quiet}
    if args.isa:
        knobs["isa"] = args.isa
    if args.threads:
        knobs["threads"] = args.threads
    try:
        with config.override(**knobs):
            if args.isa:
                from quantgraph.errors import KernelError
                from quantgraph.kernels.target import select_isa

                try:
                    select_isa("--isa")  # an unknown or unavailable rung is a usage error, named before any work
                except KernelError as exc:
                    raise UsageError(str(exc)) from None
            return int(args.func(args))
    except UsageError as exc:
        return _fail(EXIT_USAGE, exc, debug)
    except (QuantgraphError, ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # NOTE: `quantgraph inspect m.onnx | head` closes stdout early; that is not an error worth a traceback
            sys.stdout = open(os.devnull, "w")
            return EXIT_OK
        return _fail(EXIT_DATA, exc, debug)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    sys.exit(main())
