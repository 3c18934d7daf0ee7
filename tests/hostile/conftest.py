"""The bad-input corpus: hostile and unlucky inputs, each a test that must keep failing safely.

Memory cases never allocate gigabytes in the test process: :func:`run_limited` runs the code in
a child under ``RLIMIT_AS`` (so a regression fails the test, not the machine) and reports the
child's peak resident memory (``VmHWM``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, traceback
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    code = sys.stdin.read()
    result = {"error": None, "type": None}
    try:
        exec(compile(code, "<hostile case>", "exec"), {"__name__": "__hostile__"})
    except BaseException as exc:
        result["type"] = type(exc).__name__
        result["error"] = str(exc)
        result["trace"] = traceback.format_exc()[-2000:]
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                result["peak_mb"] = int(line.split()[1]) / 1024
    print("@@RESULT@@" + json.dumps(result))
    """
)


@dataclass
class Limited:
    """What a child run under ``RLIMIT_AS`` did."""

    error_type: str | None
    error: str | None
    peak_mb: float
    stdout: str
    stderr: str


def run_limited(code: str, limit_mb: int = 3072, timeout: float = 300.0) -> Limited:
    """Run ``code`` in a child Python with its address space capped at ``limit_mb``."""
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, str(limit_mb * 2**20)],
        input=textwrap.dedent(code),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    marker = [line for line in res.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if not marker:
        raise AssertionError(f"the child died (rc {res.returncode}): {res.stderr[-3000:]}")
    data = json.loads(marker[-1][len("@@RESULT@@") :])
    return Limited(data["type"], data["error"], data.get("peak_mb", 0.0), res.stdout, res.stderr)


@pytest.fixture()
def limited():
    """:func:`run_limited`, for the memory cases."""
    if not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_AS and /proc/self/status VmHWM are Linux's")
    return run_limited
