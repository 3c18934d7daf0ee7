"""What each speed trick of :mod:`ctflow.tuning` buys on the whole pipeline.

The ``pipeline`` case's ctflow contender (one scan per batch, 2 threads, ``prefetch=2``, dump of
the crops) once per setting: all tricks on; the defaults (pool and streaming stores); the buffer
pool off; page moving off; thread lending off; streaming stores off; all off. Each contender sets
the switches through the environment of its own worker process (``CTFLOW_BUFFER_POOL``,
``CTFLOW_MOVE_PAGES``, ``CTFLOW_LEND_THREADS``, ``CTFLOW_STREAMING_STORES``), so the process
starts as a user's would;
its build checks that :func:`ctflow.tuning.settings` agrees (``CTFLOW_POOL_MB=0`` in the
parent's environment would turn the pool off behind the "all on" row's back).

The tricks change speed and memory, never results: every setting's crops must equal the
all-on run's (same count, shapes, value ranges, nodule and lung content). No pass/fail target:
the report shows time and peak memory of each row against all on and against all off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks.cases.pipeline import _inputs, ctflow_builder, validate
from benchmarks.harness import Case, Contender, Runner

#: switch of :class:`ctflow.tuning.Tuning` -> its environment variable
ENV = {
    "buffer_pool": "CTFLOW_BUFFER_POOL",
    "move_pages": "CTFLOW_MOVE_PAGES",
    "lend_threads": "CTFLOW_LEND_THREADS",
    "streaming": "CTFLOW_STREAMING_STORES",
}
ALL_ON = "all tricks on"
ALL_OFF = "all tricks off"
DEFAULTS = "defaults (pool, streaming stores)"
#: (label, switches turned off)
SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (ALL_ON, ()),
    (DEFAULTS, ("move_pages", "lend_threads")),
    ("buffer pool off", ("buffer_pool",)),
    ("page moving off", ("move_pages",)),
    ("thread lending off", ("lend_threads",)),
    ("streaming stores off", ("streaming",)),
    (ALL_OFF, tuple(ENV)),
)
THREADS = 2
PREFETCH = 2


def switches(off: tuple[str, ...]) -> dict[str, bool]:
    """Every switch, False for those in ``off``."""
    return {name: name not in off for name in ENV}


def environment(off: tuple[str, ...]) -> dict[str, str | None]:
    """The worker's environment variables for a setting."""
    return {ENV[name]: "1" if on else "0" for name, on in switches(off).items()}


def _builder(expected: Mapping[str, bool]) -> Any:
    pipeline = ctflow_builder(1, PREFETCH)

    def build(inp: dict[str, Any], threads: int) -> Runner:
        from dataclasses import asdict

        from ctflow import tuning
        from ctflow.ops import intensity

        now = asdict(tuning.settings())
        if now != dict(expected):
            raise RuntimeError(
                f"ctflow.tuning.settings() is {now}, expected {dict(expected)}: check "
                "CTFLOW_POOL_MB and the CTFLOW_* switches in the environment"
            )
        runner = pipeline(inp, threads)
        runner.info["switches"] = ", ".join(k for k, v in now.items() if v) or "none"
        runner.info["streaming_stores_available"] = bool(intensity.STREAM_STORES)
        return runner

    return build


def check(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> tuple[bool, Any]:
    """The same crops as all tricks on: every summary (count, shapes, ranges, content) equal."""
    differing = [k for k in ref if k not in out or not np.array_equal(np.asarray(ref[k]), out[k])]
    return not differing, {"crops": int(out["n"][0]), "differing": differing or "none"}


def contenders() -> list[Contender]:
    """One ctflow pipeline contender per setting."""
    return [
        Contender(
            "ctflow",
            label,
            THREADS,
            _builder(switches(off)),
            env=environment(off),
        )
        for label, off in SETTINGS
    ]


TUNING = Case(
    name="tuning",
    title="What each speed trick buys on the pipeline (ctflow.tuning switches)",
    inputs=_inputs,
    contenders=contenders(),
    check=check,
    validate=validate,
    parts=("pipeline",),
    reference=f"ctflow|{ALL_ON}|{THREADS}",
    max_repeats=5,
    items=lambda profile: len(profile.pipeline_scans),
    note=(
        f"The pipeline case's ctflow run (batch_size=1, {THREADS} threads, prefetch="
        f"{PREFETCH}), each setting in its own worker process with the switches set in its "
        "environment; a setting must produce the same crops as all tricks on."
    ),
)

CASES = [TUNING]
