"""Actions as typed objects: checked when written, real signatures, a replayable record."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions import ACTIONS, Action, ActionMethods, ItemAction
from ctflow.config import read_pipeline_file
from ctflow.synthetic import make_dataset

BAD_VALUES = [
    ("unify_spacing", {"spacing": -1}, "unify_spacing: spacing must be 3 positive floats"),
    ("normalize_hu", {"min_hu": 500, "max_hu": 100}, "normalize_hu: max_hu must be greater"),
    ("flip", {"axis": 3}, "flip: axis must be one or more distinct axes 0, 1, 2"),
    ("resize", {"shape": [64, 64]}, "resize: shape must be 3 positive integers"),
    ("rotate", {"angle": "ten"}, "rotate: angle must be a finite number"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_VALUES)
def test_bad_values_are_refused_when_the_pipeline_is_written(name, kwargs, message):
    with pytest.raises(cf.InvalidParameterError, match=message):
        getattr(cf.Pipeline().load(), name)(**kwargs)
    with pytest.raises(cf.InvalidParameterError, match=message):
        ACTIONS[name](**kwargs)


def _toml_value(value):
    return json.dumps(value)  # TOML accepts JSON's numbers, strings and arrays


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_VALUES)
def test_bad_values_in_a_pipeline_file_name_the_line_before_any_scan_is_read(
    tmp_path, name, kwargs, message
):
    lines = ["[dataset]", 'paths = ["never_read.mhd"]', "", "[[actions]]", 'name = "load"', ""]
    lines += ["[[actions]]", f'name = "{name}"']
    lines += [f"{k} = {_toml_value(v)}" for k, v in kwargs.items()]
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(cf.InvalidParameterError) as info:
        read_pipeline_file(tmp_path / "p.toml")
    text = str(info.value)
    assert f"p.toml:7: action #2 '{name}'" in text and message in text


def test_relative_paths_in_a_pipeline_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    """Every parameter that holds a file or folder is declared so (``path_fields``) and is
    resolved against the pipeline file's folder, whatever the working directory."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "a.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    (folder / "p.toml").write_text(
        '[[actions]]\nname = "load"\n\n[[actions]]\nname = "cache"\ndir = "c"\n\n'
        '[[actions]]\nname = "fetch_nodules"\nannotations = "a.csv"\n\n'
        '[[actions]]\nname = "dump"\ndst = "out"\n'
    )
    monkeypatch.chdir(tmp_path)
    actions = read_pipeline_file(folder / "p.toml", need_sources=False).pipeline.actions
    assert str(actions[1].dir) == str(folder / "c")
    assert str(actions[2].annotations) == str(folder / "a.csv")
    assert str(actions[3].dst) == str(folder / "out")
    assert {"cache": {"dir"}, "dump": {"dst"}, "fetch_nodules": {"annotations"}}.items() <= {
        name: set(cls.path_fields()) for name, cls in ACTIONS.items()
    }.items()


def test_only_registered_actions_are_callable_from_a_file(tmp_path):
    for name in ("__class__", "bind", "gen_batch", "run"):
        (tmp_path / "p.toml").write_text(f'[[actions]]\nname = "{name}"\n')
        with pytest.raises(cf.InvalidParameterError, match="unknown action"):
            read_pipeline_file(tmp_path / "p.toml", need_sources=False)


def test_every_pipeline_method_has_the_actions_real_signature():
    methods = [n for n in vars(ActionMethods) if not n.startswith("_")]
    assert set(methods) == {n for n, c in ACTIONS.items() if c.__module__.startswith("ctflow.")}
    for name in methods:
        sig = inspect.signature(getattr(cf.Pipeline(), name))
        fields = [f.name for f in dataclasses.fields(ACTIONS[name])]
        assert list(sig.parameters) == fields, name
        assert all(p.kind != p.VAR_KEYWORD for p in sig.parameters.values()), name
        assert getattr(cf.Pipeline, name).__doc__, name
    assert "spacing" in inspect.signature(cf.Pipeline().unify_spacing).parameters


def test_mypy_rejects_a_misspelt_action_and_a_wrong_type(tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import ctflow as cf\n"
        "cf.Pipeline().load().unify_spacing((1.0, 1.0, 1.0))\n"
        "cf.Pipeline().lodd()\n"
        'cf.Pipeline().rotate(angle="ten", random=1.5)\n'
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--ignore-missing-imports",
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 1, res.stdout
    assert 'snippet.py:3: error: "Pipeline" has no attribute "lodd"' in res.stdout
    assert "snippet.py:4: error: Argument" in res.stdout
    assert "snippet.py:2:" not in res.stdout


def test_a_seeded_random_pipelines_history_replays_to_identical_arrays(tmp_path):
    paths, csv = make_dataset(tmp_path / "scans", n_scans=2, shape=(20, 40, 40), seed=3)
    ds = cf.Dataset.from_paths(paths)
    prep = (
        cf.Pipeline()
        .load()
        .fetch_nodules(csv)
        .unify_spacing((1.5, 1.2, 1.2), order=1)
        .rotate(20.0, random=True)
        .flip(2)
        .apply_noise(sigma=5.0)
        .cutout((3, 5, 5), n_boxes=2)
        .create_mask()
        .normalize_hu()
        .sample_nodules(3, (8, 16, 16), share=0.5)
        .dump(tmp_path / "out")
    )
    report = (ds >> prep).run(batch_size=2, seed=11)
    assert report.done == ds.ids
    items = sorted(p for p in (tmp_path / "out").iterdir() if (p / "meta.json").is_file())
    assert len(items) == 3
    for folder in items:
        meta = json.loads((folder / "meta.json").read_text())
        history = meta["history"]
        assert [h["action"] for h in history] == [
            "load", "fetch_nodules", "unify_spacing", "rotate", "flip", "apply_noise", "cutout",
            "create_mask", "normalize_hu", "sample_nodules",
        ]  # fmt: skip
        assert -20 <= history[3]["params"]["angle"] <= 20
        again = cf.replay(history)  # from the source file, no new draws
        stored = cf.Dataset.from_paths({folder.name: folder}).create_batch([folder.name]).load()
        np.testing.assert_array_equal(again[0].images, stored[0].images)
        np.testing.assert_array_equal(again[0].masks, stored[0].masks)
        np.testing.assert_array_equal(again.origin[0], stored.origin[0])
        np.testing.assert_array_equal(again.direction[0], stored.direction[0])
        assert stored.history[0] == history  # load of a dump carries the record on


def test_a_new_action_class_is_one_small_class(tmp_path):
    class Scale(ItemAction):
        name = "test_scale"
        family = "intensity"
        factor: float = 2.0

        def __post_init__(self) -> None:
            from ctflow.validation import as_float

            self._set("factor", as_float(self.factor, "factor", self.name))

        def apply(self, item, params):
            return item.images * np.float32(self.factor)

    try:
        with pytest.raises(cf.InvalidParameterError, match="test_scale: factor must be"):
            Scale(factor="x")
        b = cf.CTBatch.from_arrays([np.ones((2, 3, 3), np.int16)])
        out = cf.Pipeline().then(Scale(3.0)).execute(b)
        assert out.images.max() == 3.0 and out.history[0][-1]["args"] == {"factor": 3.0}
        (tmp_path / "p.toml").write_text('[[actions]]\nname = "test_scale"\nfactor = 0.5\n')
        spec = read_pipeline_file(tmp_path / "p.toml", need_sources=False)
        assert spec.pipeline.actions == (Scale(0.5),)
        assert isinstance(spec.pipeline.actions[0], Action)
    finally:
        ACTIONS.pop("test_scale", None)


def test_import_works_without_the_resource_module():
    code = (
        "import sys; sys.modules['resource'] = None\n"
        "import numpy as np, ctflow as cf\n"
        "b = cf.CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)])\n"
        "r = cf.Pipeline().normalize_hu().execute(b)\n"
        "print(r.images.dtype, cf.execution.peak_rss_mb())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["float32", "0.0"]


def test_history_is_json_in_meta_and_actions_record_what_they_drew(tmp_path):
    b = cf.CTBatch.from_arrays([np.zeros((4, 8, 8), np.int16)] * 2, ids=["a", "b"])
    b.set_random_state(5, 0)
    b.rotate(10.0, random=True).cutout((2, 2, 2)).dump(tmp_path)
    for k, item_id in enumerate(b.ids):
        meta = json.loads((Path(tmp_path) / item_id / "meta.json").read_text())
        assert meta["history"] == b.history[k]  # writing is not recorded: it changes nothing
        rotate, cutout = meta["history"]
        assert set(rotate["params"]) == {"angle"} and len(cutout["params"]["starts"]) == 1
    assert b.history[0][0]["params"] != b.history[1][0]["params"]  # drawn per item
