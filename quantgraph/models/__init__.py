"""Bundled demo data: a small digits CNN (ONNX) and its labelled test set.

Both files are made by ``tools/make_digits_model.py`` (which needs torch and scikit-learn; quantgraph does not):

``digits_cnn.onnx``   opset 17; input ``image`` float32 (N, 1, 8, 8) with pixels scaled to [0, 1]; output ``logits``
                      (N, 10). Conv/BatchNormalization/Relu/Add/MaxPool/GlobalAveragePool/Flatten/Gemm.
``digits_test.npz``   ``images`` float32 (500, 1, 8, 8), ``labels`` int64 (500,), ``calib_images`` float32
                      (200, 1, 8, 8) drawn from the training split, for int8 calibration.
"""
from __future__ import annotations

import os

import numpy as np

from quantgraph.errors import ModelLoadError

_DIR = os.path.dirname(os.path.abspath(__file__))

#: the model ``quantgraph demo`` runs when no ``--model`` is given
DEFAULT_MODEL = "digits_cnn.onnx"
DIGITS_SAMPLE = "digits_test.npz"


def path(name: str) -> str:
    """Absolute path of a bundled file, e.g. ``path("digits_cnn.onnx")``; raises ModelLoadError if it is missing."""
    full = os.path.join(_DIR, name)
    if os.path.basename(name) != name or not os.path.isfile(full):
        bundled = sorted(f for f in os.listdir(_DIR) if f.endswith((".onnx", ".npz")))
        raise ModelLoadError(f"no bundled file '{name}'; bundled files: {', '.join(bundled) or 'none'}")
    return full


def load_digits_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits data as ``(images, labels, calib_images)``: float32 NCHW in [0, 1], int64, float32."""
    with np.load(path(DIGITS_SAMPLE), allow_pickle=False) as data:
        return data["images"], data["labels"], data["calib_images"]


__all__ = ["DEFAULT_MODEL", "DIGITS_SAMPLE", "path", "load_digits_sample"]
