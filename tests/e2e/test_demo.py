"""End to end: the bundled digits model through ``run_demo`` and the ``quantgraph`` command line."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import quantgraph
from quantgraph import config, models
from quantgraph.cli import main
from quantgraph.demo import run_demo

MODEL = models.path(models.DEFAULT_MODEL)


@pytest.fixture(scope="module")
def demo_result() -> tuple[dict, str]:
    """One short demo run shared by the tests below (its printed table, too)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = run_demo(repeats=2, batch=64)
    return result, out.getvalue()


@pytest.fixture
def no_debug():  # type: ignore[no-untyped-def]
    # NOTE: QUANTGRAPH_DEBUG makes the CLI re-raise instead of printing one line; these tests check that line
    with config.override(debug=0):
        yield


def test_bundled_files_are_small_and_well_formed() -> None:
    images, labels, calib = models.load_digits_sample()
    assert images.shape == (500, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (500,) and labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert calib.shape == (200, 1, 8, 8) and calib.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    size = os.path.getsize(MODEL) + os.path.getsize(models.path(models.DIGITS_SAMPLE))
    assert size < 300 * 1024


def test_models_path_names_the_missing_file() -> None:
    with pytest.raises(quantgraph.errors.ModelLoadError, match="nope.onnx"):
        models.path("nope.onnx")


@pytest.mark.slow
def test_demo_accuracy_on_bundled_test_set(demo_result: tuple[dict, str]) -> None:
    result, printed = demo_result
    assert result["accuracy"] >= 0.95
    assert result["images"] == 500 and result["logits"].shape == (500, 10)
    assert {"Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Flatten",
            "Gemm"} <= set(result["op_counts"])
    first = result["rows"][0]
    assert first["name"].startswith("quantgraph") and first["latency_ms"] > 0 and first["throughput_batch"] > 0
    assert "quantgraph fp32" in printed and "accuracy" in printed


@pytest.mark.slow
def test_demo_logits_match_onnxruntime(demo_result: tuple[dict, str]) -> None:
    ort = pytest.importorskip("onnxruntime")
    result, printed = demo_result
    images, _, _ = models.load_digits_sample()
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    expected = sess.run(["logits"], {"image": images})[0]
    np.testing.assert_allclose(result["logits"], expected, rtol=0, atol=1e-4)
    assert result["onnxruntime"] and result["max_abs_diff"] < 1e-4
    assert "onnxruntime fp32" in printed


def _write_model(path: str, input_shape: list) -> str:
    """A one-node model (Flatten) with the given input shape, to feed the demo something that does not fit."""
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"], name="flat")], "mismatch",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_demo_rejects_a_model_whose_input_does_not_fit(tmp_path, capsys, no_debug) -> None:  # type: ignore
    path = _write_model(str(tmp_path / "rgb.onnx"), ["N", 3, 8, 8])
    with pytest.raises(ValueError, match=r"input 'x' is float32\(N, 3, 8, 8\)"):
        run_demo(path, repeats=1, quiet=True)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--model", path, "--repeats", "1"])
    assert exc.value.code == 1  # a model error, not a usage error
    assert capsys.readouterr().err.startswith("quantgraph: error: model input 'x'")


def test_cli_inspect_prints_graph_and_op_counts(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["inspect", MODEL, "--graph"]) == 0
    out = capsys.readouterr().out
    assert "graph digits_cnn" in out and re.search(r"total +13 +8\n", out)
    for op_name in ("Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"):
        assert f"= {op_name}(" in out
    assert re.search(r"BatchNormalization +2 *\n", out)


def test_cli_run_missing_model_exits_1_naming_the_file(capsys, no_debug) -> None:  # type: ignore
    with pytest.raises(SystemExit) as exc:
        main(["run", "missing.onnx", "-i", "x.npy"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("quantgraph: error: ") and "missing.onnx" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_run_bad_input_is_one_line(tmp_path, capsys, no_debug) -> None:  # type: ignore
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float64))
    with pytest.raises(SystemExit) as exc:
        main(["run", MODEL, "--input", f"image={tmp_path / 'x.npy'}"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "input 'image' has dtype float64" in err and err.count("\n") == 1


def test_cli_run_saves_outputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    images, _, _ = models.load_digits_sample()
    np.save(tmp_path / "x.npy", images[:4])
    out_dir = tmp_path / "out"
    assert main(["run", MODEL, "--input", f"image={tmp_path / 'x.npy'}", "--save-outputs", str(out_dir)]) == 0
    assert "logits: float32(4, 10)" in capsys.readouterr().out
    saved = np.load(out_dir / "logits.npy", allow_pickle=False)
    expected = quantgraph.compile(MODEL)(images[:4])[0]
    np.testing.assert_array_equal(saved, expected)


def test_python_m_quantgraph_runs_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "quantgraph", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"quantgraph {quantgraph.__version__}"
