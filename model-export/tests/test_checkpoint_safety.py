"""Checkpoints as they are published, loaded safely: every file here is written by torch.save.

The official training script (CLIP-CAER `main.py`) saves epoch, state_dict, best_acc (a numpy
float64), the SGD optimizer's state dict and a `__main__.RecorderMeter` holding numpy arrays.
Such a file must load; a file whose pickle would import or call anything must be refused with a
CheckpointError naming the global, and the marker files prove that nothing ran.
"""

from __future__ import annotations

import builtins
import copy
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from caer_export.__main__ import main
from caer_export.checkpoint import CheckpointError, Placeholder, load_model, read_checkpoint, safe_load

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class RecorderMeter:
    """Shaped like main.py's: epoch counters and float32 numpy arrays (pickled as `__main__.RecorderMeter`)."""

    def __init__(self, total_epoch):
        self.total_epoch = total_epoch
        self.current_epoch = 0
        self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32)
        self.epoch_accuracy = np.zeros((total_epoch, 2), dtype=np.float32)


class Sneaky:
    """A `__main__` class whose real code would leave a marker: the loader must never run it."""

    def __init__(self, marker):
        self.marker = marker
        Path(marker).touch()

    def __reduce__(self):
        return (Sneaky, (self.marker,), {"marker": self.marker, "__reduce__": "os.system", "__class__": "x"})

    def __setstate__(self, state):
        Path(state["marker"]).touch()


class Carrier:
    """A `__main__` class whose state carries an object that reduces to a call."""

    def __init__(self, payload):
        self.payload = payload


class Reduces:
    """Pickles as `func(*args)`: the classic malicious payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.fixture
def as_main(monkeypatch):
    """Make the test's classes pickle as `__main__.<name>`, as main.py's RecorderMeter does."""
    for cls in (RecorderMeter, Sneaky, Carrier):
        monkeypatch.setattr(cls, "__module__", "__main__")
        monkeypatch.setattr(sys.modules["__main__"], cls.__name__, cls, raising=False)


@pytest.fixture(scope="module")
def trained(tiny_model):
    """A copy of the tiny model after one SGD step as main.py sets it up, and its optimizer."""
    model = copy.deepcopy(tiny_model).train()
    optimizer = torch.optim.SGD(
        [
            {"params": model.temporal_net.parameters(), "lr": 1e-2},
            {"params": model.temporal_net_body.parameters(), "lr": 1e-2},
            {"params": model.image_encoder.parameters(), "lr": 1e-5},
            {"params": model.prompt_learner.parameters(), "lr": 1e-3},
            {"params": model.project_fc.parameters(), "lr": 1e-5},
        ],
        lr=1e-2, momentum=0.9, weight_decay=1e-4,
    )
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    return model.eval(), optimizer


def official_layout(trained) -> dict:
    model, optimizer = trained
    recorder = RecorderMeter(6)
    recorder.epoch_losses[0] = [61.5, 70.25]
    recorder.epoch_accuracy[0] = [48.0, 41.5]
    recorder.current_epoch = 1
    return {
        "epoch": 2,
        "state_dict": model.state_dict(),
        "best_acc": max(np.float64(41.375), 0),  # main.py: max(val_uar, best_acc), val_uar from numpy
        "optimizer": copy.deepcopy(optimizer.state_dict()),  # its per-parameter dicts are the live ones
        "recorder": recorder,
        "caer_dims": model.dims.to_json(),  # our tiny model's sizes; the official file is ViT-B/32
    }


class _Numpy1Pickler(pickle._Pickler):
    """Names numpy's globals as numpy 1.x does (`numpy.core.multiarray.*`, not `numpy._core...`)."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"numpy.core{module[len('numpy._core'):]}\n{name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.ModuleType("numpy1_pickle")
NUMPY1_PICKLE.Pickler = _Numpy1Pickler
NUMPY1_PICKLE.dump = pickle.dump


def assert_same_tensors(state: dict, expected: dict) -> None:
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


# --------------------------------------------------------------------------- accepted layouts


@pytest.mark.parametrize("variant", ["zip", "numpy-1.x names", "legacy format"])
def test_the_official_training_layout_loads(tmp_path, as_main, trained, variant):
    raw = official_layout(trained)
    path = tmp_path / "model_best.pth"
    if variant == "zip":
        torch.save(raw, path)
    elif variant == "numpy-1.x names":
        torch.save(raw, path, pickle_module=NUMPY1_PICKLE)
        named = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        assert {"numpy.core.multiarray.scalar", "numpy.core.multiarray._reconstruct"} <= named
        assert not any(n.startswith("numpy._core") for n in named)
    else:
        torch.save(raw, path, _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError):  # what this replaces: plain weights_only refuses it
        torch.load(path, weights_only=True)
    safe_before = set(torch.serialization.get_safe_globals())

    state, dims = read_checkpoint(path)
    assert_same_tensors(state, raw["state_dict"])
    assert dims == trained[0].dims
    model_state = load_model(path).state_dict()
    for key, value in raw["state_dict"].items():
        assert torch.equal(model_state[key], value), key

    loaded = safe_load(path)
    assert loaded["epoch"] == 2
    assert type(loaded["best_acc"]) is np.float64 and loaded["best_acc"] == 41.375
    recorder = loaded["recorder"]
    assert isinstance(recorder, Placeholder) and not isinstance(recorder, RecorderMeter)
    assert recorder.pickled_name == "__main__.RecorderMeter"
    assert recorder.state["current_epoch"] == 1 and recorder.state["total_epoch"] == 6
    for name in ("epoch_losses", "epoch_accuracy"):
        array = recorder.state[name]
        assert type(array) is np.ndarray and array.dtype == np.float32
        np.testing.assert_array_equal(array, getattr(raw["recorder"], name))
    expected_optimizer = raw["optimizer"]
    assert loaded["optimizer"]["param_groups"] == expected_optimizer["param_groups"]
    assert len(loaded["optimizer"]["state"]) == len(expected_optimizer["state"]) > 0
    for index, entry in expected_optimizer["state"].items():
        assert torch.equal(loaded["optimizer"]["state"][index]["momentum_buffer"], entry["momentum_buffer"])
    assert set(torch.serialization.get_safe_globals()) == safe_before, "the allowlist must not outlive the load"


@pytest.mark.parametrize("layout", ["state_dict entry", "bare state dict", "module. prefixes", "main.py + module."])
def test_other_layouts_load(tmp_path, as_main, trained, layout):
    model = trained[0]
    expected = model.state_dict()
    if layout == "state_dict entry":
        raw = {"state_dict": expected, "caer_dims": model.dims.to_json()}
    elif layout == "bare state dict":
        raw = dict(expected)
    elif layout == "module. prefixes":
        raw = {"state_dict": {f"module.{k}": v for k, v in expected.items()}, "caer_dims": model.dims.to_json()}
    else:
        raw = official_layout(trained)
        raw["state_dict"] = {f"module.{k}": v for k, v in expected.items()}
    torch.save(raw, tmp_path / "c.pt")
    state, dims = read_checkpoint(tmp_path / "c.pt")
    assert_same_tensors(state, expected)
    assert dims == (model.dims if "caer_dims" in raw else type(model.dims).vit_b_32())


def test_a_mapping_that_is_no_state_dict_is_a_clear_error(tmp_path):
    torch.save({"weights": [torch.zeros(2)], "epoch": 3}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="expected a dict with a 'state_dict' entry, or a state dict"):
        read_checkpoint(tmp_path / "c.pt")
    torch.save({"state_dict": {"a": torch.zeros(1), "b": 3}}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="state dict entry 'b' is a int, not a named tensor"):
        read_checkpoint(tmp_path / "d.pt")
    torch.save({"state_dict": {"a": torch.zeros(1), "module.a": torch.zeros(1)}}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="holds a twice"):
        read_checkpoint(tmp_path / "e.pt")


# --------------------------------------------------------------------------- refused files


def _payloads(marker: Path) -> dict:
    shell = f"touch {marker}"
    return {
        "os.system": (Reduces(os.system, shell), "posix.system" if os.name == "posix" else "nt.system"),
        "builtins.exec": (Reduces(builtins.exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        "builtins.eval": (Reduces(builtins.eval, f"__import__('os').system({shell!r})"), "builtins.eval"),
        # protocol 2 writes Python 2 names (pickle's fix_imports): subprocess.Popen is "commands Popen"
        "subprocess.Popen": (Reduces(subprocess.Popen, ["touch", str(marker)]), "commands.Popen"),
        "torch.load": (Reduces(torch.load, str(marker)), "torch.serialization.load"),
        "getattr": (Reduces(getattr, torch.Tensor, "new"), "builtins.getattr"),
    }


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("where", ["top level", "optimizer", "recorder", "__main__ state"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen", "torch.load", "getattr"])
def test_a_pickle_that_calls_something_is_refused_and_nothing_runs(tmp_path, as_main, trained, payload, where, fmt):
    marker = tmp_path / "PWNED"
    evil, global_name = _payloads(marker)[payload]
    raw = official_layout(trained)
    if where == "top level":
        raw["extra"] = evil
    elif where == "optimizer":
        raw["optimizer"]["state"][0]["momentum_buffer_extra"] = evil
        raw["optimizer"]["param_groups"][1]["foreach"] = evil
    elif where == "recorder":
        raw["recorder"].epoch_losses = evil
    else:
        raw["recorder"] = Carrier({"nested": [evil]})
    path = tmp_path / "evil.pt"
    torch.save(raw, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    message = str(error.value)
    assert str(path) in message
    assert f"refused to load: its pickle names {global_name}" in message
    assert "Nothing was imported or run" in message
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_main_class_is_never_looked_up_or_run(tmp_path, as_main, trained, fmt):
    marker = tmp_path / "PWNED"
    sneaky = Sneaky(tmp_path / "made-by-the-test")  # the real class runs here, while saving
    sneaky.marker = str(marker)
    raw = official_layout(trained)
    raw["recorder"] = sneaky
    path = tmp_path / "sneaky.pt"
    torch.save(raw, path, _use_new_zipfile_serialization=fmt == "zip")
    loaded = safe_load(path)
    assert not marker.exists()
    stand_in = loaded["recorder"]
    assert type(stand_in).__mro__[1] is Placeholder and stand_in.pickled_name == "__main__.Sneaky"
    assert stand_in.args == (str(marker),)
    assert stand_in.state == {"marker": str(marker), "__reduce__": "os.system", "__class__": "x"}
    assert type(stand_in).__reduce__ is object.__reduce__  # the state is data, not attributes
    read_checkpoint(path)
    assert not marker.exists()


def test_a_class_of_another_module_is_refused(tmp_path):
    torch.save({"state_dict": {}, "extra": Path(tmp_path)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"its pickle names pathlib\.PosixPath"):
        read_checkpoint(tmp_path / "c.pt")


class _ObjectDtype:
    def __reduce__(self):
        return (np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 63))


class _FieldsDtype:
    """A float64 dtype whose pickled state adds an object field: numpy itself would accept it."""

    def __reduce__(self):
        return (np.dtype, ("f8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 1, 0))


@pytest.mark.parametrize(
    "value, message",
    [
        (np.array([1, "two", None], dtype=object), "dtype 'O8' is not numeric"),
        (np.array(["text"]), "dtype 'U4' is not numeric"),
        (np.datetime64("2024-01-01"), "dtype 'M8' is not numeric"),
        (_ObjectDtype(), "dtype 'O8' is not numeric"),
        (_FieldsDtype(), "dtype state is not that of a plain numeric dtype"),
        (Reduces(np.ndarray, (10**6,)), "numpy.ndarray may only be the type given to _reconstruct"),
        (Reduces(np._core.multiarray._reconstruct, torch.Tensor, (0,), b"b"), "_reconstruct of a type other than numpy.ndarray"),
        (Reduces(bytes, 10**12), "bytes() with arguments"),
    ],
    ids=["object array", "str array", "datetime scalar", "object dtype", "dtype with fields",
         "ndarray called", "reconstruct of another type", "huge bytes"],
)
def test_a_numpy_value_that_is_not_plain_numbers_is_refused(tmp_path, trained, value, message):
    torch.save({"state_dict": trained[0].state_dict(), "extra": value}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="refused to load") as error:
        read_checkpoint(tmp_path / "c.pt")
    assert message in str(error.value)


def test_numeric_numpy_values_of_every_kind_load(tmp_path):
    values = {
        "bool": np.array([True, False]),
        "int8": np.int8(-3),
        "uint16": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "big-endian": np.arange(4, dtype=">f4"),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "complex": np.complex128(1 + 2j),
        "empty": np.zeros((0, 3), dtype=np.int64),
    }
    torch.save({"state_dict": {}, **values}, tmp_path / "c.pt")
    loaded = safe_load(tmp_path / "c.pt")
    for key, value in values.items():
        assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value)


# --------------------------------------------------------------------------- the command line


def test_the_cli_exports_the_official_layout_and_refuses_a_malicious_file(tmp_path, as_main, trained, capsys):
    crops = tmp_path / "crops"
    assert main(["calibration-crops", "--out", str(crops), "--count", "2"]) == 0
    good = tmp_path / "model_best.pth"
    torch.save(official_layout(trained), good)
    assert main(["export", str(good), "--out", str(tmp_path / "bundle"), "--calibration", str(crops)]) == 0
    assert (tmp_path / "bundle" / "manifest.json").is_file()

    marker = tmp_path / "PWNED"
    raw = official_layout(trained)
    raw["recorder"] = Reduces(os.system, f"touch {marker}")
    evil = tmp_path / "evil.pth"
    torch.save(raw, evil)
    run = subprocess.run(
        [sys.executable, "-m", "caer_export", "export", str(evil), "--out", str(tmp_path / "b2"), "--calibration", str(crops)],
        cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert f"error: {evil}: refused to load: its pickle names posix.system" in run.stderr
    assert not marker.exists()
    assert not (tmp_path / "b2").exists()
