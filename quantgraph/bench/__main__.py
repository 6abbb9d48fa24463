"""``python -m quantgraph.bench <subcommand> [options]``: dispatch through one table.

To add a subcommand, add ``"name": ("package.module", "one-line description")`` to ``SUBCOMMANDS``; the module's
``main(argv)`` takes the remaining arguments (list of str) and returns an exit code.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gemm": ("quantgraph.bench.gemm", "int8 GEMM vs numpy fp32 and onnxruntime MatMulInteger"),
    "conv": ("quantgraph.bench.conv", "int8 ResNet-50 convolutions vs numpy fp32 (im2col) and QLinearConv"),
    "compile": ("quantgraph.bench.compile", "cold / warm compile time of the int8 kernel set (fresh processes)"),
    "model": ("quantgraph.bench.model", "ResNet-50 / BERT / MobileNetV2, fp32 and int8, vs onnxruntime and OpenVINO"),
    "rnn": ("quantgraph.bench.rnn", "LSTM / GRU layers (DeepSpeech2, small), fp32 and int8, vs onnxruntime"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:8s} {doc}" for name, (_, doc) in SUBCOMMANDS.items()]
        print("usage: python -m quantgraph.bench <subcommand> [--json] [--quick]\nsubcommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
