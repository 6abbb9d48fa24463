"""Silero VAD check: the pretrained voice-activity model (its 16 kHz and 8 kHz networks live in the two branches of
an If on the sample rate) in fp32 and int8, against onnxruntime, streamed over real speech with the LSTM state
carried from chunk to chunk.

    pip download silero-vad --no-deps -d /tmp/sv && unzip -q /tmp/sv/silero_vad-*.whl -d /tmp/sv
    python tools/vad_check.py /tmp/sv/silero_vad/data/silero_vad.onnx --wav /usr/share/sounds/alsa/*.wav

The first half of the wav files calibrates (every 3rd chunk, both rates), the rest is the test stream. Prints per
rate: fp32 max |ours - onnxruntime|, int8 output SQNR against our fp32, agreement of the speech decision
(p > 0.5) with fp32, and the median latency per chunk of onnxruntime / ours fp32 / ours int8 (same run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import wave
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import quantgraph  # noqa: E402
from quantgraph.bench.qdq import sqnr_db  # noqa: E402

CHUNK = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}   # silero v5 reads each chunk behind the previous chunk's last samples


def load_wav(path: str, rate: int) -> np.ndarray:
    """Mono 16-bit wav as float32 at ``rate`` (integer decimation behind a moving-average low-pass)."""
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: {8 * w.getsampwidth()}-bit samples; expected 16-bit PCM")
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        x = x.reshape(-1, w.getnchannels()).mean(axis=1)
        k = w.getframerate() // rate
    if k > 1:
        x = np.convolve(x, np.ones(k) / k, mode="same")[::k]
    return x.astype(np.float32)


def chunks(x: np.ndarray, rate: int) -> np.ndarray:
    n, c = CHUNK[rate], CONTEXT[rate]
    steps = len(x) // n
    x = np.concatenate([np.zeros(c, np.float32), x[:steps * n]])
    return np.stack([x[i * n:i * n + n + c] for i in range(steps)])[:, None, :]


def stream(run: Callable[[dict], Any], xs: np.ndarray, rate: int) -> np.ndarray:
    state = np.zeros((2, 1, 128), np.float32)
    out = []
    for x in xs:
        p, state = run({"input": x, "state": state, "sr": np.array(rate, np.int64)})
        out.append(np.ravel(p))
    return np.concatenate(out)


def latency_ms(run: Callable[[dict], Any], feeds: dict, repeats: int = 200) -> float:
    for _ in range(20):
        run(feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--wav", nargs="+", required=True, help="16-bit PCM speech files (>= 2)")
    ap.add_argument("--precision", default=None, help="e.g. Conv=int16: compile(precision=) for the int8 model")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    ort_run = lambda feeds: sess.run(None, feeds)  # noqa: E731
    fp32 = quantgraph.compile(args.model)
    half = max(1, len(args.wav) // 2)
    calib = []
    for rate in CHUNK:
        for path in args.wav[:half]:
            state = np.zeros((2, 1, 128), np.float32)
            for x in chunks(load_wav(path, rate), rate)[::3]:
                feeds = {"input": x, "state": state, "sr": np.array(rate, np.int64)}
                calib.append(feeds)
                _, state = fp32(feeds)
    precision = dict([args.precision.split("=")]) if args.precision else None
    t0 = time.perf_counter()
    int8 = quantgraph.compile(args.model, quantize="int8", calibration=calib, precision=precision)
    print(f"int8 compile {time.perf_counter() - t0:.1f} s on {len(calib)} calibration chunks")
    print(int8.quantization.summary())
    for rate in CHUNK:
        xs = np.concatenate([chunks(load_wav(p, rate), rate) for p in args.wav[half:]])
        ref, ours, q = stream(ort_run, xs, rate), stream(fp32, xs, rate), stream(int8, xs, rate)
        feeds = {"input": xs[0], "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(rate, np.int64)}
        ms = [latency_ms(r, feeds) for r in (ort_run, fp32, int8)]
        print(f"{rate} Hz, {len(xs)} chunks: fp32 max|ours - onnxruntime| {np.abs(ref - ours).max():.2g}; int8 SQNR "
              f"{sqnr_db(ours, q):.1f} dB, speech decision agreement {np.mean((ours > 0.5) == (q > 0.5)):.3f} "
              f"(speech in {np.mean(ours > 0.5):.0%} of chunks); ms per chunk onnxruntime {ms[0]:.3f} / fp32 "
              f"{ms[1]:.3f} / int8 {ms[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
