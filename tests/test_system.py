"""Portable answers about the machine and its processes (``ctflow.system``), tested on the
branches of other operating systems too: units of ``ru_maxrss`` on macOS, no ``os.kill`` probe
on Windows, no ``resource`` module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types

import pytest

from ctflow import system


def _fake_resource(maxrss: int) -> types.ModuleType:
    usage = types.SimpleNamespace(ru_maxrss=maxrss)
    module = types.ModuleType("resource")
    module.RUSAGE_SELF = 0  # type: ignore[attr-defined]
    module.getrusage = lambda who: usage  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("platform", "maxrss", "mib"),
    [("linux", 300 * 1024, 300.0), ("darwin", 300 * 2**20, 300.0)],  # KiB on Linux, bytes on macOS
)
def test_peak_rss_is_in_mib_on_linux_and_macos(monkeypatch, platform, maxrss, mib):
    monkeypatch.setitem(sys.modules, "resource", _fake_resource(maxrss))
    monkeypatch.setattr(system.sys, "platform", platform)
    assert system.peak_rss_mb() == pytest.approx(mib)


def test_peak_rss_without_the_resource_module_is_zero(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource -> ImportError
    assert system.peak_rss_mb() == 0.0


def test_process_exists_never_probes_with_os_kill_on_windows(monkeypatch):
    def kill(pid: int, sig: int) -> None:  # os.kill(pid, 0) terminates a process on Windows
        raise AssertionError("os.kill called on Windows")

    monkeypatch.setattr(system.sys, "platform", "win32")
    monkeypatch.setattr(system.os, "kill", kill)
    assert system.process_exists(os.getpid() + 1) is None
    assert system.process_exists(os.getpid()) is True


def test_process_exists_tells_live_dead_and_zombie_processes():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert system.process_exists(child.pid) is True
        child.kill()
        # killed but not reaped yet (no wait()): a zombie counts as gone
        deadline = time.monotonic() + 10
        while system.process_exists(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert system.process_exists(child.pid) is False
    finally:
        child.kill()
        child.wait()
    assert system.process_exists(child.pid) is False  # reaped: no such process


def test_cpu_count_follows_the_affinity_and_falls_back(monkeypatch):
    assert system.cpu_count() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(system.os, "sched_getaffinity")
    monkeypatch.setattr(system.os, "cpu_count", lambda: None)
    assert system.cpu_count() == 1
