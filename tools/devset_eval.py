"""The dev set's eval.py with quantgraph's compile() options, for the README's dev-set table.

    QG_KW='{"accuracy_target": 40.0}' python tools/devset_eval.py OUT --backend quantgraph
    QG_ORT_METHOD=Entropy python tools/devset_eval.py OUT --backend ort-int8      # another calibrate_method
    QG_METRIC=0.005 python tools/devset_eval.py OUT --backend quantgraph          # the task metric as the target

``QG_KW``: JSON keyword arguments for ``quantgraph.compile`` (eval.py passes none). ``QG_ORT_METHOD``: onnxruntime's
``CalibrationMethod`` for the ort backends (models kept in ``OUT/int8_<method>``). ``QG_METRIC``: accuracy_target is
the model's task metric on the calibration split with this tolerance. Prints eval.py's lines, the accuracy search
of each model (SEARCH) and every runner's median latency per call (TIMING). ``DEVSET`` (default ../shared/devset)
is where eval.py and metrics.py are.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("DEVSET", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "devset")))
import eval as ev  # noqa: E402

KW = json.loads(os.environ.get("QG_KW", "{}"))
TIMES = []


def timed(label, run):
    ts = []
    TIMES.append((label, ts))

    def r(f):
        t0 = time.perf_counter()
        o = run(f)
        ts.append(time.perf_counter() - t0)
        return o
    return r


_ort = ev.ort_runner


def ort_runner(path, simulate=False):
    return timed(f"ort{'-sim' if simulate else ''}:{os.path.basename(path)}", _ort(path, simulate))


ev.ort_runner = ort_runner


def quantgraph_runner(path, feeds, quantize):
    import quantgraph
    t0 = time.perf_counter()
    kw = dict(KW)
    if os.environ.get("QG_METRIC"):   # the task metric on the calibration split (eval.py scores the eval split)
        import metrics
        name = os.path.basename(path)[:-len(".onnx")]
        cal = metrics.Samples(os.path.join(sys.argv[1], "samples", name + ".npz"))
        cal.split = ["eval" if x == "calib" else "other" for x in cal.split]

        def task_metric(model):
            def run(f):
                o = model(f)
                return list(o.values()) if isinstance(o, dict) else list(o)
            return metrics.evaluate(name, run, cal)["metric"]
        kw["accuracy_target"] = task_metric
        kw.setdefault("accuracy_tolerance", float(os.environ.get("QG_METRIC")))
    if quantize:
        m = quantgraph.compile(path, calibration=list(feeds), quantize="int8", **kw)
    else:
        m = quantgraph.compile(path)
    print(f"COMPILE {os.path.basename(path)} {time.perf_counter() - t0:.1f}s", flush=True)
    s = getattr(m, "accuracy_search", None)
    if s is not None:
        kinds = {p: sum(1 for v in s.kept.values() if v == p) for p in ("int16", "fp32")}
        print("SEARCH", os.path.basename(path), json.dumps({"met": s.met, "kept": kinds, "units": len(s.order),
                                                            "trials": [(t.k, t.precision, round(t.value, 2))
                                                                       for t in s.trials],
                                                            "seconds": round(s.seconds, 1)}), flush=True)

    def run(f):
        o = m(f)
        return list(o.values()) if isinstance(o, dict) else list(o)
    return timed(f"qg:{os.path.basename(path)}", run)


ev.quantgraph_runner = quantgraph_runner

meth = os.environ.get("QG_ORT_METHOD")
if meth:
    import onnxruntime.quantization as oq
    _qs = oq.quantize_static

    def qs(*a, **k):
        k["calibrate_method"] = getattr(oq.CalibrationMethod, meth)
        return _qs(*a, **k)
    oq.quantize_static = qs
    _oi = ev.ort_int8

    def ort_int8(name, path, feeds, workdir, preprocess=False):
        d = workdir + "_" + meth
        os.makedirs(d, exist_ok=True)
        return _oi(name, path, feeds, d, preprocess)
    ev.ort_int8 = ort_int8

try:
    rc = ev.main()
finally:
    import numpy as np
    for label, ts in TIMES:
        if ts:
            print(f"TIMING {label} median_ms={1000 * float(np.median(ts)):.2f} n={len(ts)}", flush=True)
sys.exit(rc)
