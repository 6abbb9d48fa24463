"""Saved compiled models: ``CompiledModel.save(dir)`` and ``quantgraph.load(dir)``.

An artifact is a directory of four files, none of them a pickle::

    manifest.json   format + version, quantgraph/numpy/numba versions, the source model's sha256, the ISA rung it was
                    compiled on, opt level, quantization settings and calibration summary, inputs and outputs, and
                    the size and sha256 of every other file
    graph.json      the optimized (quantized) graph that runs: nodes, attributes, tensor types, scales
    export.json     the graph ``export_onnx`` writes (the imported fp32 graph or the QDQ graph), when there is one
    tensors.npz     every constant of both graphs, once each (``np.load(..., allow_pickle=False)``)

Loading checks the manifest first (format, version), then each file against its size and checksum, then rebuilds the
graph and lowers it for *this* host's best rung: kernels and packed weights are made at load time, never stored, so an
artifact compiled on an AVX-512 host runs on an AVX2 one. Integer kernels give the same int32 results on every rung.

Saving is atomic: the files are written and fsynced in a temporary sibling directory that then takes the target's
place (an atomic exchange where the kernel has ``renameat2``, else two renames), so an interrupted save leaves the
previous artifact, never half of a new one.
"""
from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from typing import Any

import numpy as np

from quantgraph.errors import ModelLoadError, QuantgraphError
from quantgraph.fileio import umask_mode
from quantgraph.ir import serialize
from quantgraph.ir.graph import Graph

log = logging.getLogger(__name__)

FORMAT = "quantgraph-artifact"
#: bump when a reader of the previous version could misread the new files; load() refuses other versions
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPH = "graph.json"
EXPORT = "export.json"
TENSORS = "tensors.npz"
REPORT = "report.json"


class ArtifactError(ModelLoadError):
    """A saved model that cannot be loaded (missing, truncated, edited, pickled or of another format version)."""


# -- save -------------------------------------------------------------------------------------------------------
def save(model: Any, path: str | os.PathLike, report: dict | None = None) -> str:
    """Write ``model`` (a CompiledModel) to the directory ``path``, replacing an artifact there atomically.

    ``report`` (the JSON-able dict of ``compiler/report_data.collect``) is stored beside it for ``quantgraph report``.
    Returns the path.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise QuantgraphError(f"cannot save to '{path}': it exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)):
        # NOTE: replacing the directory would delete whatever the user keeps there
        raise QuantgraphError(f"cannot save to '{path}': it is a non-empty directory that is not a quantgraph "
                              "artifact (no manifest.json); choose a new or empty directory")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    store = serialize.Arrays()
    graph_doc = serialize.to_dict(model.graph, store)[0]
    docs = {GRAPH: graph_doc}
    if model.export_graph is not None:
        docs[EXPORT] = serialize.to_dict(model.export_graph, store)[0]
    if report is not None:
        docs[REPORT] = report
    _remove_stale(parent, os.path.basename(path))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.saving-{os.getpid()}-", dir=parent)
    try:
        files = {}
        for name, doc in docs.items():
            files[name] = _write(os.path.join(tmp, name), json.dumps(doc, indent=1, allow_nan=True).encode())
        files[TENSORS] = _write_npz(os.path.join(tmp, TENSORS), store.arrays)
        manifest = _manifest(model, files)
        _write(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1).encode())
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), umask_mode())
        os.chmod(tmp, umask_mode(directory=True))   # mkdtemp made it 0700
        _fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s (%d nodes, %s)", path, len(model.graph), manifest["quantization"]["mode"])
    return path


def _remove_stale(parent: str, base: str) -> None:
    """Delete the temporary directories of saves into ``base`` whose process died (killed mid-save)."""
    prefix = f".{base}.saving-"
    for name in os.listdir(parent):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(file: str, data: bytes) -> dict[str, Any]:
    with open(file, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_npz(file: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    with open(file, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": os.path.getsize(file), "sha256": _sha256_file(file)}


def _sha256_file(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the kernel or libc cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _replace_dir(tmp: str, path: str) -> None:
    if not os.path.exists(path):
        os.rename(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp)  # tmp now holds the previous artifact
    else:
        # NOTE: two renames: between them the previous artifact sits at <path>.old-*, whole (load() says so)
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
        os.rmdir(old)
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(os.path.dirname(path))


def _manifest(model: Any, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import numba

    import quantgraph
    from quantgraph.compiler.pipeline import fusions_applied
    from quantgraph.kernels.target import default_isa, host_cpu_name
    from quantgraph import config

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "quantgraph_version": quantgraph.__version__,
        "numpy_version": np.__version__, "numba_version": numba.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model.graph.name, "source_sha256": getattr(model, "source_sha256", None),
        "compiled_on": {"isa": config.get().isa or default_isa(), "cpu": host_cpu_name()},
        "opt_level": model.opt_level,
        "inputs": [_io(model.graph, t) for t in model.graph.inputs],
        "outputs": [_io(model.graph, t) for t in model.graph.outputs],
        "optimized_from": dict(model.optimized_from or {}),
        "fusions": fusions_applied(model.pass_reports) if model.pass_reports else model.fusions_saved,
        "compile_seconds": {k: round(v, 4) for k, v in model.compile_seconds.items() if not k.startswith("plan")},
        "quantization": quantization_summary(model),
        "files": files,
    }


def _io(graph: Graph, name: str) -> dict[str, Any]:
    info = graph.tensors[name]
    return {"name": name, "dtype": info.dtype, "shape": None if info.shape is None else list(info.shape)}


def quantization_summary(model: Any) -> dict[str, Any]:
    """JSON-able: the settings a quantized model was made with, nodes per precision and the calibration summary."""
    if model.saved_quantization is not None:  # loaded from an artifact: what it was saved with
        return model.saved_quantization
    plan = model.quantization
    if plan is None:
        from quantgraph.compiler.api import is_quantized

        return {"mode": "imported-quantized" if is_quantized(model.graph) else "fp32"}
    import dataclasses

    out: dict[str, Any] = {"mode": "int8", "options": _jsonable(dataclasses.asdict(plan.options)),
                           "nodes": {p: sum(ops.values()) for p, ops in plan.counts().items()},
                           "decisions": {d.node: d.precision for d in plan.decisions.values()}}
    source = model.quant_source
    if source is not None:
        stats = source.stats
        out["calibration"] = {"mode": stats.mode, "percentile": stats.percentile, "batches": stats.batches,
                              "tensors": len(stats.observers)}
    search = model.accuracy_search
    if search is not None:
        out["accuracy_search"] = _jsonable(search.to_json())
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


# -- load -------------------------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The checked manifest of the artifact at ``path`` (format and version); raises ArtifactError."""
    path = os.fspath(path)
    file = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        olds = [n for n in os.listdir(os.path.dirname(os.path.abspath(path)) or ".")
                if n.startswith(f".{os.path.basename(path)}.old-")] if os.path.isdir(os.path.dirname(
                    os.path.abspath(path))) else []
        hint = f" (an interrupted save left the previous one at '{olds[0]}')" if olds else ""
        raise ArtifactError(f"artifact '{path}' does not exist or is not a directory{hint}")
    try:
        with open(file, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise ArtifactError(f"'{file}' is missing: '{path}' is not a quantgraph artifact (or a save into it was "
                            "interrupted before it completed)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{file}' is not valid JSON (truncated or edited?): {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"'{file}' is not a quantgraph artifact manifest (format="
                            f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"'{file}': artifact format version {version!r} (written by quantgraph "
                            f"{manifest.get('quantgraph_version', '?')}) is not supported by this quantgraph, which "
                            f"reads version {FORMAT_VERSION}; compile the model again")
    if not isinstance(manifest.get("files"), dict) or GRAPH not in manifest["files"] \
            or TENSORS not in manifest["files"]:
        raise ArtifactError(f"'{file}' lists no {GRAPH} / {TENSORS} under 'files'")
    return manifest


def _checked(path: str, name: str, entry: dict[str, Any]) -> str:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise ArtifactError(f"'{file}' is missing (the manifest lists it)")
    size = os.path.getsize(file)
    if size != entry.get("bytes"):
        raise ArtifactError(f"'{file}' is {size} bytes; the manifest says {entry.get('bytes')} (truncated or "
                            "replaced)")
    if _sha256_file(file) != entry.get("sha256"):
        raise ArtifactError(f"'{file}' does not match its sha256 in the manifest (edited or corrupted)")
    return file


def _json(file: str) -> Any:
    try:
        with open(file, "rb") as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{file}' is not valid JSON: {exc}") from None


def _arrays(file: str) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ArtifactError(f"'{file}' holds pickled (object) arrays; artifacts never load pickles") from None
        raise ArtifactError(f"'{file}' is not a readable .npz archive: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"'{file}' is not a readable .npz archive: {exc}") from None


def load(path: str | os.PathLike, opt_level: int | None = None) -> Any:
    """Rebuild the CompiledModel saved at ``path``, lowered for this host (no recalibration)."""
    from quantgraph.compiler.executable import CompiledModel
    from quantgraph.compiler.lower import lower
    from quantgraph.ir.verify import verify
    from quantgraph import config

    path = os.fspath(path)
    manifest = read_manifest(path)
    files = {name: _checked(path, name, entry) for name, entry in manifest["files"].items()}
    arrays = _arrays(files[TENSORS])
    graphs = {}
    for name in (GRAPH, EXPORT):
        if name in files:
            try:
                graphs[name] = serialize.from_dict(_json(files[name]), arrays)
            except ModelLoadError as exc:
                raise ArtifactError(f"'{files[name]}': {exc}") from None
            except (KeyError, TypeError, ValueError) as exc:
                raise ArtifactError(f"'{files[name]}' is not a valid quantgraph graph: {type(exc).__name__}: "
                                    f"{exc}") from None
    graph = graphs[GRAPH]
    if config.get().verify:
        verify(graph)
    level = manifest.get("opt_level", 3) if opt_level is None else opt_level
    model = CompiledModel(graph, lower(graph, level) if level > 0 else None, opt_level=level,
                          optimized_from=manifest.get("optimized_from") or None)
    model.export_graph = graphs.get(EXPORT)
    model.source_sha256 = manifest.get("source_sha256")
    model.saved_quantization = manifest.get("quantization")
    model.fusions_saved = manifest.get("fusions") or {}
    model.manifest = manifest
    model.saved_report = _json(files[REPORT]) if REPORT in files else None
    compiled_on = manifest.get("compiled_on", {}).get("isa")
    log.info("loaded %s (compiled on %s, running on %s)", path, compiled_on, config.get().isa or "auto")
    return model


def sha256_of_model(model: Any) -> str | None:
    """sha256 of the model a user compiled: the file's bytes, the serialized bytes or ModelProto; None for a Graph."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        try:
            return _sha256_file(os.fspath(model))
        except OSError:
            return None
    if isinstance(model, bytes):
        return hashlib.sha256(model).hexdigest()
    if isinstance(model, onnx.ModelProto):
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    return None
