"""Under on_error="skip" any exception is reported, even one whose message cannot be printed
(issue 16, case 14)."""

from __future__ import annotations

import numpy as np

import ctflow as cf
from ctflow.io.metaimage import write_metaimage


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


class Hostile(cf.CTBatch):
    @cf.action
    @cf.inbatch_parallel
    def explode(self, item):
        if item.id == "b":
            raise Unprintable()
        return None

    @cf.action
    def explode_batch(self):
        if "c" in self.ids:
            raise Unprintable()
        return self


def test_skip_reports_an_exception_whose_str_raises(tmp_path):
    for name in "abcd":
        write_metaimage(
            tmp_path / f"{name}.mhd", np.zeros((2, 3, 3), np.int16), cf.Geometry((1, 1, 1))
        )
    ds = cf.Dataset.from_glob(str(tmp_path / "*.mhd"), batch_class=Hostile)
    report = (ds >> cf.Pipeline().load().explode().explode_batch()).run(
        batch_size=2, on_error="skip"
    )
    failed = dict(report.failed)
    assert sorted(failed) == ["b", "c"]
    assert failed["b"] == "explode: Unprintable: <the message could not be printed>"
    assert failed["c"] == "explode_batch: Unprintable: <the message could not be printed>"
    assert sorted(report.done) == ["a", "d"]
    assert "FAILED b: explode: Unprintable" in report.summary()
