"""What the ``quantgraph`` command reads: input arrays, calibration data, ``--shape`` specs, models or artifacts."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from quantgraph.errors import InputError, ModelLoadError


class UsageError(Exception):
    """A command line that cannot mean anything (exit status 2, like argparse's own errors)."""


def parse_shapes(specs: Sequence[str]) -> dict[str, tuple]:
    """``--shape name=N,3,224,224`` (dims are ints or symbolic names) -> ``{name: dims}``."""
    out: dict[str, tuple] = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        if not sep or not name or not dims:
            raise UsageError(f"--shape '{spec}': expected NAME=D0,D1,... (e.g. x=N,3,224,224)")
        parsed = []
        for d in dims.split(","):
            d = d.strip()
            if not d:
                raise UsageError(f"--shape '{spec}': empty dimension")
            parsed.append(int(d) if d.lstrip("-").isdigit() else d)
        if any(isinstance(d, int) and d < 1 for d in parsed):
            raise UsageError(f"--shape '{spec}': dimensions must be >= 1 or symbolic names")
        out[name] = tuple(parsed)
    return out


def _load_array(file: str, what: str) -> Any:
    if not os.path.isfile(file):
        raise InputError(f"{what}: file '{file}' does not exist")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{what}: '{file}' is not a readable .npy/.npz file (pickles are refused): {exc}") from None


def parse_inputs(specs: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``name=file.npy`` pairs (a bare ``file.npy`` is allowed when the model has one input; a bare ``file.npz``
    holds arrays named after the inputs) -> arrays."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            name, file = "", spec
        if not name and file.endswith(".npz"):
            with _load_array(file, "--input") as npz:
                unknown = [k for k in npz.files if k not in input_names]
                if unknown:
                    raise InputError(f"--input '{file}' holds array(s) {unknown} that are not inputs of the model "
                                     f"(its inputs: {', '.join(input_names)})")
                for k in npz.files:
                    feeds[k] = npz[k]
            continue
        if not name:
            if len(input_names) != 1:
                raise UsageError(f"--input '{spec}' has no name; use NAME=FILE.npy (the model's inputs: "
                                 f"{', '.join(input_names)})")
            name = input_names[0]
        if name in feeds:
            raise UsageError(f"--input gives '{name}' more than once")
        arr = _load_array(file, f"--input {name}")
        if not isinstance(arr, np.ndarray):
            arr.close()
            raise InputError(f"--input {name}: '{file}' holds several arrays (.npz); give one .npy per input")
        feeds[name] = arr
    return feeds


def calibration_batches(source: str, input_names: Sequence[str], batch: int) -> list[dict[str, np.ndarray]]:
    """``--calib``: an ``.npz`` with one array per input (or one array for a one-input model), split into batches
    of ``batch`` along axis 0; or a directory of ``.npz``/``.npy`` files, one batch each (sorted by name)."""
    if os.path.isdir(source):
        files = sorted(f for f in os.listdir(source) if f.endswith((".npz", ".npy")))
        if not files:
            raise InputError(f"--calib directory '{source}' holds no .npz or .npy files")
        return [b for f in files for b in _batches_of(os.path.join(source, f), input_names, None)]
    return _batches_of(source, input_names, batch)


def _batches_of(file: str, input_names: Sequence[str], batch: int | None) -> list[dict[str, np.ndarray]]:
    loaded = _load_array(file, "--calib")
    if isinstance(loaded, np.ndarray):
        if len(input_names) != 1:
            raise InputError(f"--calib '{file}' is one array but the model has inputs {', '.join(input_names)}: "
                             "use an .npz with one array per input name")
        arrays = {input_names[0]: loaded}
    else:
        with loaded as npz:
            if len(npz.files) == 1 and len(input_names) == 1:
                arrays = {input_names[0]: npz[npz.files[0]]}
            else:
                missing = [n for n in input_names if n not in npz.files]
                if missing:
                    raise InputError(f"--calib '{file}' lacks array(s) for input(s) {', '.join(missing)} (it holds "
                                     f"{', '.join(npz.files) or 'nothing'})")
                arrays = {n: npz[n] for n in input_names}
    sizes = {n: (a.shape[0] if a.ndim else 0) for n, a in arrays.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise InputError(f"--calib '{file}': the arrays must share a non-empty first (batch) axis; sizes {sizes}")
    total = next(iter(sizes.values()))
    step = total if batch is None else batch
    return [{n: a[i:i + step] for n, a in arrays.items()} for i in range(0, total, step)]


def random_inputs(model: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for ``model``'s declared inputs: symbolic dims take ``batch``; floats standard normal, integers
    in [0, 2) (valid token ids and masks), bools random."""
    rng = np.random.default_rng(seed)
    from quantgraph.ir.dtypes import to_numpy

    feeds = {}
    for info in model.input_info():
        if info.shape is None:
            raise UsageError(f"input '{info.name}' has no declared shape; give --input or --shape "
                             f"{info.name}=D0,D1,...")
        dims = [d if isinstance(d, int) else batch for d in info.shape]
        dtype = np.dtype(to_numpy(info.dtype))
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, 2, dims).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.random(dims) < 0.5
        else:
            raise UsageError(f"input '{info.name}' is {info.dtype}; --random-inputs makes numbers and bools only")
    return feeds


def open_model(path: str, opt_level: int, shapes: dict[str, tuple] | None = None) -> Any:
    """A CompiledModel from an artifact directory (``quantgraph.load``) or an ONNX file (compiled fp32)."""
    import quantgraph

    if os.path.isdir(path):
        if shapes:
            raise UsageError("--shape applies to ONNX models; an artifact keeps the shapes it was compiled with")
        return quantgraph.load(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"'{path}' does not exist (expected an .onnx file or a saved artifact directory)")
    return quantgraph.compile(path, opt_level=opt_level, input_shapes=shapes or None)
