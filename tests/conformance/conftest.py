"""Conformance summary: pass/skip/fail counts per suite and the most common skip reasons."""
from __future__ import annotations

import collections
import re

_results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_reasons: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    if "conformance" not in report.nodeid:
        return
    suite = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
    if report.when == "call" and not report.skipped:
        _results[suite]["passed" if report.passed else "failed"] += 1
    elif report.skipped and report.when in ("setup", "call"):
        _results[suite]["skipped"] += 1
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _reasons[_reason_key(reason)] += 1
    elif report.failed and report.when == "setup":
        _results[suite]["failed"] += 1


def _reason_key(reason: str) -> str:
    """Group skip reasons: drop node/tensor names so equal causes count together."""
    reason = reason.replace("Skipped: ", "")
    reason = re.sub(r"node '[^']*' ", "", reason)
    reason = re.sub(r"(graph input|initializer|graph output) '[^']*'", r"\1", reason)
    return reason.split("\n")[0][:140]


def pytest_terminal_summary(terminalreporter):  # type: ignore[no-untyped-def]
    if not _results:
        return
    tr = terminalreporter
    tr.section("ONNX conformance")
    for suite, c in sorted(_results.items()):
        tr.write_line(f"{suite}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped")
    for reason, n in _reasons.most_common(25):
        tr.write_line(f"  skipped {n:4d}: {reason}")
