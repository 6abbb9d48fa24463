"""The ``quantgraph`` command, each subcommand in a subprocess as users run it: outputs, files and exit codes
(0 ok, 1 model/data error, 2 usage error; one line on stderr, a traceback only with --debug)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import quantgraph
from quantgraph import models

MODEL = models.path(models.DEFAULT_MODEL)


def qg(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QUANTGRAPH_DEBUG"}
    return subprocess.run([sys.executable, "-m", "quantgraph", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err.startswith("quantgraph: error: ") or err.startswith("usage: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    images, _, calib = models.load_digits_sample()
    np.savez(root / "calib.npz", image=calib[:96])
    np.save(root / "x.npy", images[:8])
    return {"root": str(root), "calib": str(root / "calib.npz"), "x": str(root / "x.npy")}


@pytest.fixture(scope="module")
def artifact(data: dict[str, str]) -> tuple[str, subprocess.CompletedProcess]:
    out = os.path.join(data["root"], "digits-int8")
    proc = qg("compile", MODEL, "-o", out, "--quantize", "int8", "--calib", data["calib"], "--calib-batch", "32",
              "-q")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_compile_writes_an_artifact(artifact: tuple) -> None:
    out, proc = artifact
    assert "compiled 'digits_cnn': 13 -> " in proc.stdout and f"saved {out}" in proc.stdout
    assert "int8 " in proc.stdout
    assert proc.stderr == ""   # -q: no progress bars, no logs
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["quantization"]["calibration"]["batches"] == 3   # 96 images / --calib-batch 32
    assert "report.json" in manifest["files"]


def test_run_artifact_matches_the_library(artifact: tuple, data: dict[str, str]) -> None:
    out, _ = artifact
    y = os.path.join(data["root"], "y.npz")
    proc = qg("run", out, "--input", f"image={data['x']}", "--output", y)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("logits: float32(8, 10)")
    with np.load(y, allow_pickle=False) as npz:
        got = npz["logits"]
    np.testing.assert_array_equal(got, quantgraph.load(out)(np.load(data["x"]))[0])


def test_run_on_a_forced_rung_and_threads(artifact: tuple, data: dict[str, str]) -> None:
    out, _ = artifact
    ys = []
    for extra in ([], ["--isa", "portable", "--threads", "1"]):
        y = os.path.join(data["root"], f"y{len(ys)}.npz")
        proc = qg("run", out, "-i", data["x"], "--output", y, *extra)
        assert proc.returncode == 0, proc.stderr
        with np.load(y) as npz:
            ys.append(npz["logits"])
    np.testing.assert_array_equal(ys[0], ys[1])   # int8 kernels: the same int32 results on every rung


def test_run_onnx_model_fp32(data: dict[str, str]) -> None:
    proc = qg("run", MODEL, "-i", f"image={data['x']}", "--save-outputs", os.path.join(data["root"], "outs"))
    assert proc.returncode == 0, proc.stderr
    got = np.load(os.path.join(data["root"], "outs", "logits.npy"))
    np.testing.assert_allclose(got, quantgraph.compile(MODEL)(np.load(data["x"]))[0], rtol=1e-5, atol=1e-5)


def test_bench_json_with_onnxruntime_side_by_side(artifact: tuple) -> None:
    out, _ = artifact
    proc = qg("bench", out, "--random-inputs", "--batch", "1,4", "--repeats", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["batch"] for r in result["rows"]] == [1, 4]
    assert result["rows"][1]["shapes"] == {"image": [4, 1, 8, 8]}
    assert all(r["quantgraph_ms"] > 0 for r in result["rows"])
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert result["onnxruntime"].startswith("not run")
    else:
        assert all(r["onnxruntime_ms"] > 0 and r["speedup_vs_onnxruntime"] > 0 for r in result["rows"])


def test_bench_table(data: dict[str, str]) -> None:
    proc = qg("bench", MODEL, "--random-inputs", "--repeats", "2", "--no-ort")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("digits_cnn (fp32)") and lines[1].split()[:3] == ["batch", "quantgraph", "ms"]
    assert lines[2].split()[0] == "1" and float(lines[2].split()[1]) > 0


def test_inspect_artifact_and_picture(artifact: tuple, data: dict[str, str]) -> None:
    out, _ = artifact
    svg = os.path.join(data["root"], "graph.svg")
    proc = qg("inspect", out, "--svg", svg)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "artifact: quantgraph " in text and "quantized: int8 " in text
    assert "fusions / rewrites applied" in text and "qdq_conv_to_qconv" in text
    rows = [ln.split() for ln in text.splitlines() if ln.split()[1:2] == ["QConv"]]
    assert len(rows) == 3 and all(r[2] == "int8" and r[3].startswith("qconv") for r in rows), rows
    written = text.strip().splitlines()[-1].split()[-1]
    assert written in (svg, svg[:-4] + ".dot") and os.path.getsize(written) > 500
    head = open(written).read(200)
    assert "<svg" in head or "<?xml" in head or head.lstrip().startswith("digraph")


def test_report_text_html_json(artifact: tuple, data: dict[str, str]) -> None:
    out, _ = artifact
    html = os.path.join(data["root"], "report.html")
    js = os.path.join(data["root"], "report.json")
    proc = qg("report", out, "--html", html, "--json", js)
    assert proc.returncode == 0, proc.stderr
    report = json.load(open(js))
    assert report == json.load(open(os.path.join(out, "report.json")))   # the one measured at compile time
    page = open(html).read()
    assert page.lstrip().lower().startswith("<!doctype html") and "</html>" in page
    assert "digits_cnn" in proc.stdout


def test_report_needs_calib_for_an_onnx_model() -> None:
    one_line_error(qg("report", MODEL), 2, "needs --calib")


def test_compile_fp32_with_shape(data: dict[str, str]) -> None:
    out = os.path.join(data["root"], "fp32-b2")
    proc = qg("compile", MODEL, "-o", out, "--shape", "image=2,1,8,8", "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["inputs"][0]["shape"] == [2, 1, 8, 8] and manifest["quantization"] == {"mode": "fp32"}
    x = np.load(data["x"])[:3]
    np.save(os.path.join(data["root"], "x3.npy"), x)
    one_line_error(qg("run", out, "-i", os.path.join(data["root"], "x3.npy")), 1, "input 'image'", "dim 0 must be 2")


def test_usage_errors_exit_2(data: dict[str, str]) -> None:
    one_line_error(qg("compile", MODEL, "-o", "x", "--quantize", "int8"), 2, "needs --calib")
    one_line_error(qg("compile", MODEL, "-o", "x", "--calib", data["calib"]), 2, "--calib needs --quantize int8")
    one_line_error(qg("run", MODEL, "--isa", "bogus", "-i", data["x"]), 2, "unknown ISA 'bogus'")
    one_line_error(qg("bench", MODEL), 2, "--random-inputs")
    one_line_error(qg("compile", MODEL, "-o", "x", "--shape", "image"), 2, "--shape 'image'")
    proc = qg("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_model_and_data_errors_exit_1(data: dict[str, str], artifact: tuple, tmp_path: os.PathLike) -> None:
    one_line_error(qg("run", "missing.onnx", "-i", data["x"]), 1, "'missing.onnx' does not exist")
    one_line_error(qg("compile", data["x"], "-o", str(tmp_path / "o")), 1, "not a readable ONNX model")
    one_line_error(qg("compile", MODEL, "-o", str(tmp_path / "o"), "--quantize", "int8", "--calib",
                      str(tmp_path / "none.npz")), 1, "none.npz' does not exist")
    import shutil

    broken = shutil.copytree(artifact[0], tmp_path / "broken")
    with open(broken / "graph.json", "a") as f:
        f.write(" ")
    err = one_line_error(qg("run", str(broken), "-i", data["x"]), 1, "graph.json")
    assert "bytes; the manifest says" in err


def test_debug_shows_the_traceback_and_verbose_logs(data: dict[str, str], artifact: tuple) -> None:
    proc = qg("run", "missing.onnx", "-i", data["x"], "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr
    proc = qg("run", artifact[0], "-i", data["x"], "-v")
    assert proc.returncode == 0 and "quantgraph: INFO: loaded " in proc.stderr
    proc = qg("run", artifact[0], "-i", data["x"])
    assert proc.returncode == 0 and "INFO" not in proc.stderr


def test_accuracy_target_and_exclude(data: dict[str, str]) -> None:
    out = os.path.join(data["root"], "target")
    proc = qg("compile", MODEL, "-o", out, "--quantize", "int8", "--calib", data["calib"], "--calib-batch", "48",
              "--accuracy-target", "35", "--exclude", "Gemm", "--no-report", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "accuracy search (output SQNR >= 35" in proc.stdout
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    q = manifest["quantization"]
    assert q["options"]["exclude"] == ["Gemm"] and "accuracy_search" in q and "report.json" not in manifest["files"]


def test_debug_2_logs_the_rules_nearest_misses() -> None:
    """QUANTGRAPH_DEBUG=2 in a library (no CLI) gets a stderr handler: the rules' nearest misses are seen."""
    code = "import quantgraph; from quantgraph import models; quantgraph.compile(models.path('digits_cnn.onnx'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, QUANTGRAPH_DEBUG="2"))
    assert proc.returncode == 0, proc.stderr
    assert "quantgraph: INFO: quantgraph.compiler.rewrite: rule conv_to_fused: fired 3" in proc.stderr
