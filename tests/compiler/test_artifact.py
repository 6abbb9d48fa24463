"""Saved artifacts (compiler/artifact.py): save -> load -> run bit-identical in a fresh process and on another ISA
rung; missing, truncated, edited, pickled, version-incompatible and interrupted saves rejected or survived."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import quantgraph
from quantgraph import models
from quantgraph.compiler import artifact
from quantgraph.compiler.artifact import ArtifactError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, _, calib = models.load_digits_sample()
    return images[:64], calib


@pytest.fixture(scope="module")
def int8_model(digits: tuple) -> quantgraph.CompiledModel:
    _, calib = digits
    return quantgraph.compile(models.path("digits_cnn.onnx"), quantize="int8",
                              calibration=[calib[i:i + 50] for i in range(0, 200, 50)])


@pytest.fixture(scope="module")
def saved(int8_model: quantgraph.CompiledModel, digits: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    images, _ = digits
    root = tmp_path_factory.mktemp("artifact")
    path = int8_model.save(root / "digits.qg")
    np.save(root / "images.npy", images)
    np.save(root / "expected.npy", int8_model(images)[0])
    return str(path), root


def _copy(src: str, dst: os.PathLike) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def _rewrite_manifest(path: str, **changes: object) -> None:
    file = os.path.join(path, "manifest.json")
    with open(file) as f:
        manifest = json.load(f)
    manifest.update(changes)
    with open(file, "w") as f:
        json.dump(manifest, f)


def _refresh_checksum(path: str, name: str) -> None:
    """What an attacker who edits a file would do: make the manifest agree with it."""
    import hashlib

    data = open(os.path.join(path, name), "rb").read()
    file = os.path.join(path, "manifest.json")
    manifest = json.load(open(file))
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    json.dump(manifest, open(file, "w"))


LOAD_AND_RUN = textwrap.dedent("""
    import sys, numpy as np, quantgraph
    model = quantgraph.load(sys.argv[1])
    out = model(np.load(sys.argv[2]))[0]
    np.save(sys.argv[3], out)
""")


def _run_fresh(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", LOAD_AND_RUN, *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def test_manifest_describes_the_model(saved: tuple, int8_model: quantgraph.CompiledModel) -> None:
    path, _ = saved
    manifest = artifact.read_manifest(path)
    assert manifest["format_version"] == artifact.FORMAT_VERSION
    assert manifest["quantgraph_version"] == quantgraph.__version__
    with open(models.path("digits_cnn.onnx"), "rb") as f:
        import hashlib

        assert manifest["source_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert manifest["compiled_on"]["isa"]
    q = manifest["quantization"]
    assert q["mode"] == "int8" and q["options"]["calib_mode"] == "auto"
    assert q["calibration"]["batches"] == 4
    assert q["nodes"]["int8"] == len(int8_model.quantization.int8_nodes)
    assert set(manifest["files"]) == {"graph.json", "export.json", "tensors.npz"}
    assert [i["name"] for i in manifest["inputs"]] == int8_model.input_names
    # no file of an artifact is a pickle, and the npz loads without allow_pickle
    with np.load(os.path.join(path, "tensors.npz"), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_reload_in_fresh_process_is_bit_identical(saved: tuple) -> None:
    path, root = saved
    out = root / "fresh.npy"
    proc = _run_fresh([path, str(root / "images.npy"), str(out)])
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(out), np.load(root / "expected.npy"))


@pytest.mark.parametrize("rung", ["portable"])
def test_artifact_runs_on_another_rung(saved: tuple, rung: str) -> None:
    """Kernels are made at load time for the host's rung; the int8 kernels give the same int32 results on every
    rung, and this model's float tail (dequantize, Gemm epilogue) is elementwise, so the outputs are identical."""
    path, root = saved
    out = root / f"{rung}.npy"
    proc = _run_fresh([path, str(root / "images.npy"), str(out)], env={"QUANTGRAPH_ISA": rung})
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(out), np.load(root / "expected.npy"))


def test_same_process_reload_keeps_quantization_summary(saved: tuple, digits: tuple) -> None:
    path, root = saved
    model = quantgraph.load(path)
    np.testing.assert_array_equal(model(digits[0])[0], np.load(root / "expected.npy"))
    assert model.saved_quantization["mode"] == "int8"
    assert model.export_graph is not None and any(n.op == "DequantizeLinear" for n in model.export_graph)
    # saving a loaded model again keeps what it was saved with
    again = model.save(root / "again.qg")
    assert artifact.read_manifest(again)["quantization"] == artifact.read_manifest(path)["quantization"]


def test_fp32_model_round_trip(tmp_path: os.PathLike, digits: tuple) -> None:
    model = quantgraph.compile(models.path("digits_cnn.onnx"))
    path = model.save(tmp_path / "fp32")
    loaded = quantgraph.load(path)
    np.testing.assert_array_equal(loaded(digits[0])[0], model(digits[0])[0])
    assert artifact.read_manifest(path)["quantization"] == {"mode": "fp32"}


def test_missing_artifact_and_manifest(tmp_path: os.PathLike, saved: tuple) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        quantgraph.load(tmp_path / "nothing")
    path = _copy(saved[0], tmp_path / "a")
    os.remove(os.path.join(path, "manifest.json"))
    with pytest.raises(ArtifactError, match=r"manifest\.json' is missing"):
        quantgraph.load(path)


def test_missing_file(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    os.remove(os.path.join(path, "graph.json"))
    with pytest.raises(ArtifactError, match=r"graph\.json' is missing"):
        quantgraph.load(path)


def test_truncated_tensors(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    file = os.path.join(path, "tensors.npz")
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ArtifactError, match=rf"tensors\.npz' is {size // 2} bytes; the manifest says {size}"):
        quantgraph.load(path)


def test_edited_graph(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    file = os.path.join(path, "graph.json")
    text = open(file).read()
    edited = text.replace('"QConv"', '"QConX"', 1)
    assert edited != text and len(edited) == len(text)
    open(file, "w").write(edited)
    with pytest.raises(ArtifactError, match=r"graph\.json' does not match its sha256"):
        quantgraph.load(path)


def test_edited_manifest_json(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    file = os.path.join(path, "manifest.json")
    open(file, "w").write(open(file).read()[:-40])
    with pytest.raises(ArtifactError, match=r"manifest\.json' is not valid JSON"):
        quantgraph.load(path)


def test_other_format_version(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    _rewrite_manifest(path, format_version=artifact.FORMAT_VERSION + 1, quantgraph_version="9.0")
    with pytest.raises(ArtifactError, match=r"format version 2 \(written by quantgraph 9.0\) is not supported"):
        quantgraph.load(path)


def test_not_an_artifact_manifest(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    _rewrite_manifest(path, format="something-else")
    with pytest.raises(ArtifactError, match="not a quantgraph artifact manifest"):
        quantgraph.load(path)


def test_pickled_npz_rejected_even_with_matching_checksums(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    file = os.path.join(path, "tensors.npz")
    with np.load(file, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["a0"] = np.array([{"evil": 1}], dtype=object)
    np.savez(file, **arrays)   # np.savez pickles object arrays
    _refresh_checksum(path, "tensors.npz")
    with pytest.raises(ArtifactError, match=r"tensors\.npz' holds pickled \(object\) arrays"):
        quantgraph.load(path)


def test_undecodable_graph_names_file(tmp_path: os.PathLike, saved: tuple) -> None:
    path = _copy(saved[0], tmp_path / "a")
    file = os.path.join(path, "graph.json")
    doc = json.load(open(file))
    del doc["nodes"][0]["op"]
    json.dump(doc, open(file, "w"))
    _refresh_checksum(path, "graph.json")
    with pytest.raises(ArtifactError, match=r"graph\.json' is not a valid quantgraph graph"):
        quantgraph.load(path)


def test_save_refuses_a_directory_that_is_not_an_artifact(tmp_path: os.PathLike,
                                                          int8_model: quantgraph.CompiledModel) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(quantgraph.errors.QuantgraphError, match="not a quantgraph artifact"):
        int8_model.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_save_replaces_an_artifact(tmp_path: os.PathLike, int8_model: quantgraph.CompiledModel,
                                   digits: tuple) -> None:
    fp32 = quantgraph.compile(models.path("digits_cnn.onnx"))
    path = fp32.save(tmp_path / "m")
    int8_model.save(path)
    assert artifact.read_manifest(path)["quantization"]["mode"] == "int8"
    assert sorted(os.listdir(tmp_path)) == ["m"]   # no temporary or old directory left behind


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys, quantgraph
    from quantgraph import models
    from quantgraph.compiler import artifact
    model = quantgraph.compile(models.path("digits_cnn.onnx"))
    real = artifact.{func}
    calls = []
    def dying(*args):
        calls.append(1)
        if len(calls) == {nth}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    artifact.{func} = dying
    model.save(sys.argv[1])
""")


@pytest.mark.parametrize("func,nth", [("_write", 2), ("_fsync_dir", 1)])
def test_kill_during_save_keeps_the_previous_artifact(saved: tuple, tmp_path: os.PathLike, func: str,
                                                      nth: int) -> None:
    """SIGKILL while the files are written (2nd file) and after all are written but before the swap."""
    path = _copy(saved[0], tmp_path / "m")
    before = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE.format(func=func, nth=nth), path],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr
    after = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)}
    assert after == before
    model = quantgraph.load(path)
    np.testing.assert_array_equal(model(np.load(saved[1] / "images.npy"))[0], np.load(saved[1] / "expected.npy"))
    # the dead save's temporary directory is removed by the next save
    assert any(n.startswith(".m.saving-") for n in os.listdir(tmp_path))
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_artifact_permissions_follow_the_umask(saved: tuple) -> None:
    """Temporary directories are 0700; the saved artifact is readable like any directory the user makes."""
    path, _ = saved
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~mask
    for name in os.listdir(path):
        assert os.stat(os.path.join(path, name)).st_mode & 0o777 == 0o666 & ~mask, name
