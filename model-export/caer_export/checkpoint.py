"""Reading and writing CLIP-CAER checkpoints.

Accepted layouts (all give the same state dict):
- the official training script's file (CLIP-CAER `main.py`): `{"epoch", "state_dict",
  "best_acc" (a numpy float64), "optimizer" (SGD state dict), "recorder" (a `__main__.RecorderMeter`)}`;
- `{"state_dict": ...}`, as `save_checkpoint` writes it;
- a bare state dict (names -> tensors at the top level);
- in any of them, keys prefixed `module.` (DataParallel), which are removed.
Zip files (torch >= 1.6) and legacy (non-zip) `torch.save` files are read.

Safety: a checkpoint is untrusted input, and unpickling never imports a module or runs code from
it. torch's restricted unpickler (`torch.load(..., weights_only=True)`) reads the file, allowing
tensors, storages and containers, plus here numeric numpy scalars and arrays (built by us from
their raw bytes, see below) and, for each class under `__main__` that the file names, an inert
`Placeholder` that keeps its pickled state as plain data and is never used. Any other global (a
function such as `os.system`, `builtins.eval`, `torch.load`, or a class of another module) is
refused with a `CheckpointError` naming it and the file; the CLI reports it and exits 2.

Loading is strict: every key of the model must be present with its shape, and nothing else.
The official file stores CLIP's tensors twice (`image_encoder.*` = `clip_model_.visual.*`,
`text_encoder.*` = `clip_model_.*`): both copies must agree, or the file is refused.

Our own generated checkpoints may carry a top-level `"caer_dims"` entry (the sizes of a tiny
test model); the official file has none and is read as ViT-B/32.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import pickletools
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .model import EOT_TOKEN_ID, ClipCaer, ModelDims

SOT_TOKEN_ID = 49406


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shared_prefixes() -> list[tuple[str, str]]:
    """Pairs of key prefixes that the official checkpoint stores twice."""
    return [
        ("image_encoder.", "clip_model_.visual."),
        ("text_encoder.", "clip_model_."),
    ]


def check_state_dict(model: ClipCaer, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check, with an error that names every offending key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems: list[str] = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:20]))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]))
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(f"key {key}: shape {list(state_dict[key].shape)}, expected {list(shape)}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match CLIP-CAER: " + "; ".join(problems))
    for ours, theirs in _shared_prefixes():
        for key, value in state_dict.items():
            if key.startswith(ours):
                twin = theirs + key[len(ours) :]
                if twin in state_dict and not torch.equal(value, state_dict[twin]):
                    raise CheckpointError(f"{source}: key {key} differs from its copy {twin}")


def eot_positions(state_dict: dict[str, torch.Tensor], dims: ModelDims, source: str) -> torch.Tensor:
    """Where each class prompt ends, found from the checkpoint itself.

    The suffix holds the descriptor's token embeddings, then EOT's, then padding; the EOT row
    equals `token_embedding[EOT]`, so no tokenizer is needed to read a published checkpoint.
    """
    eot = state_dict["clip_model_.token_embedding.weight"][EOT_TOKEN_ID]
    suffix = state_dict["prompt_learner.token_suffix"]
    positions = []
    for c in range(suffix.shape[0]):
        hits = (suffix[c] == eot).all(dim=-1).nonzero().flatten()
        if len(hits) == 0:
            raise CheckpointError(f"{source}: prompt_learner.token_suffix[{c}] holds no end-of-text token")
        positions.append(1 + dims.n_ctx + int(hits[0]))
    return torch.tensor(positions, dtype=torch.long)


# --------------------------------------------------------------------------- safe unpickling
#
# torch's restricted unpickler (`weights_only=True`) does the unpickling: it never imports a
# module; a GLOBAL resolves only through its allowlist, to which the names below are added for
# the length of one load (`torch.serialization.safe_globals`). What they resolve to is ours, not
# numpy's: numpy's `dtype.__setstate__` trusts the flags in the pickle (a float64 dtype can be
# given object fields), so instead of letting numpy rebuild dtypes and arrays from pickled
# state, these small records check the state and build the value with `np.frombuffer` from
# plain bytes, numeric dtypes only. numpy 1.x pickles name `numpy.core.multiarray.*`, numpy 2.x
# `numpy._core.multiarray.*`; both are accepted.

_NUMERIC_DTYPE = re.compile(r"[biufc][0-9]{1,2}")  # numpy's reduce spec: 'f8', 'b1', 'c16', ...


def _unpickling_error(message: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"numpy value refused: {message}")


class Placeholder:
    """Inert stand-in for a `__main__` class a checkpoint names (main.py's `RecorderMeter`).

    It keeps what the pickle gave as plain data (`args` of the call, `state` of BUILD) and
    is never used; the real class is never looked up.
    """

    pickled_name = "__main__.?"

    def __new__(cls, *args):
        self = object.__new__(cls)
        self.args = args
        self.state = None
        return self

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.pickled_name}>"


def _placeholder_class(name: str) -> type:
    return type(name.rsplit(".", 1)[1], (Placeholder,), {"pickled_name": name, "__module__": __name__})


class _Dtype:
    """`numpy.dtype(spec, align, copy)` while unpickling; a real dtype once BUILD gives its byte order."""

    def __init__(self, spec=None, align=False, copy=True):
        if not isinstance(spec, str) or not _NUMERIC_DTYPE.fullmatch(spec):
            raise _unpickling_error(f"dtype {spec!r} is not numeric")
        try:
            self.dtype = np.dtype(spec)
        except TypeError as e:
            raise _unpickling_error(f"dtype {spec!r}: {e}") from None

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags): a plain scalar type only
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None) and hasattr(self, "dtype")):
            raise _unpickling_error("dtype state is not that of a plain numeric dtype")
        self.dtype = self.dtype.newbyteorder(state[1])

    def value(self) -> np.dtype:
        if not hasattr(self, "dtype"):
            raise _unpickling_error("dtype without a type")
        return self.dtype


def _ndarray_type(*args):
    """What `numpy.ndarray` names: only a token for `_reconstruct`, never called or instantiated."""
    raise _unpickling_error("numpy.ndarray may only be the type given to _reconstruct")


class _Array:
    """`numpy.core.multiarray._reconstruct(ndarray, ...)`; BUILD gives shape, dtype and the bytes."""

    array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _unpickling_error("array state is not (version, shape, dtype, fortran, bytes)")
        _version, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise _unpickling_error(f"array shape {shape!r}")
        if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or type(fortran) is not bool:
            raise _unpickling_error("array of a non-numeric dtype or without raw bytes")
        dt = dtype.value()
        if len(data) != math.prod(shape) * dt.itemsize:
            raise _unpickling_error(f"array of shape {list(shape)} {dt} holds {len(data)} bytes")
        self.array = np.frombuffer(data, dt).reshape(shape, order="F" if fortran else "C").copy()

    def value(self) -> np.ndarray:
        if self.array is None:
            raise _unpickling_error("array without data")
        return self.array


def _reconstruct(subtype=None, shape=None, typecode=None):
    if subtype is not _ndarray_type:
        raise _unpickling_error("_reconstruct of a type other than numpy.ndarray")
    return _Array()


def _scalar(dtype=None, data=None):
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes):
        raise _unpickling_error("scalar of a non-numeric dtype or without raw bytes")
    dt = dtype.value()
    if len(data) != dt.itemsize:
        raise _unpickling_error(f"{dt} scalar of {len(data)} bytes")
    return np.frombuffer(data, dt, count=1)[0]


def _empty_bytes(*args) -> bytes:
    """`bytes()`: how protocol 2 pickles b"" (an empty array's data); no other call (`bytes(10**12)`)."""
    if args:
        raise _unpickling_error("bytes() with arguments")
    return b""


def _numpy_globals() -> list[tuple[object, str]]:
    """(object, pickled name) pairs for `torch.serialization.safe_globals`."""
    entries: list[tuple[object, str]] = [
        (_empty_bytes, "builtins.bytes"),
        (_Dtype, "numpy.dtype"),
        (_ndarray_type, "numpy.ndarray"),
        (_Array, f"{__name__}._Array"),  # BUILD on an allowlisted type only: it must be listed
    ]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x, numpy 2.x
        entries += [(_scalar, f"{module}.scalar"), (_reconstruct, f"{module}._reconstruct")]
    return entries


def _materialise(obj, seen: set[int]):
    """Replace the numpy records by the arrays and dtypes they hold (containers in place)."""
    if isinstance(obj, (_Array, _Dtype)):
        try:
            return obj.value()
        except pickle.UnpicklingError as e:
            raise CheckpointError(str(e)) from None
    if isinstance(obj, (dict, list, Placeholder)):
        if id(obj) in seen:
            return obj
        seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _materialise(value, seen)
    elif type(obj) is list:
        obj[:] = [_materialise(v, seen) for v in obj]
    elif type(obj) is tuple:
        return tuple(_materialise(v, seen) for v in obj)
    elif isinstance(obj, Placeholder):
        obj.args = _materialise(obj.args, seen)
        obj.state = _materialise(obj.state, seen)
    return obj


def _refused(path: Path, names) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: its pickle names {', '.join(sorted(names))}; a checkpoint may only hold "
        "tensors, containers, numeric numpy values and __main__ classes (kept as inert placeholders). "
        "Nothing was imported or run."
    )


def _scan_globals(path: Path, is_zip: bool) -> set[str]:
    """The globals (`module.name`) the checkpoint's pickles name, read statically: nothing is imported.

    Zip files (torch >= 1.6): torch's own scanner, which leaves out what is already allowed.
    Legacy files (a run of pickles): `pickletools`, every GLOBAL of the first five pickles.
    """
    if is_zip:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    names: set[str] = set()
    with open(path, "rb") as f:
        # magic number, protocol version, sys info, the object, the storage keys
        for _ in range(5):
            for op, arg, _pos in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.add(arg.replace(" ", ".", 1))
    return names


def _is_placeholder_name(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "__main__" and len(parts) > 1 and all(p.isidentifier() for p in parts[1:])


def safe_load(path: Path) -> object:
    """Unpickle an untrusted checkpoint with torch's restricted unpickler (`weights_only=True`).

    Besides what torch allows by default (tensors, storages, containers, ...) this allows numeric
    numpy scalars and arrays and stands in a `Placeholder` for each `__main__` class; any other
    global is refused with a `CheckpointError` naming it (zip files: found by a static scan before
    anything is unpickled; legacy files: when the restricted unpickler reaches it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch's own test (serialization._is_zipfile)
    allowed = _numpy_globals()
    with torch.serialization.safe_globals(allowed):
        try:
            named = _scan_globals(path, is_zip)
        except Exception:  # unreadable: torch.load below says why, or refuses
            named = set()
    ours = {name for _, name in allowed}
    placeholders = [(_placeholder_class(n), n) for n in sorted(named) if _is_placeholder_name(n)]
    if is_zip:  # the zip scan lists only what is not allowed yet: all of it must be a placeholder
        unknown = {n for n in named if n not in ours and not _is_placeholder_name(n)}
        if unknown:
            raise _refused(path, unknown)
    with torch.serialization.safe_globals(allowed + placeholders):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch re-raises `from None` with advice to load unsafely; the original is the context
            inner = e.__context__ if isinstance(e.__context__, pickle.UnpicklingError) else e
            message = str(inner)
            hit = re.search(r"GLOBAL (\S+)", message)
            if hit:
                name = hit.group(1)
                raise _refused(path, [name if "." in name else f"builtins.{name}"]) from None  # torch drops "builtins."
            raise CheckpointError(f"{path}: refused to load: {message.splitlines()[0]}") from None
        except Exception as e:  # torch raises many types for a corrupt file
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    try:
        return _materialise(raw, set())
    except CheckpointError as e:
        raise CheckpointError(f"{path}: refused to load: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: refused to load: data nested too deeply") from None


def _state_dict_of(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of any accepted layout, `module.` (DataParallel) prefixes removed."""
    if isinstance(raw, Mapping) and "state_dict" in raw:
        entries = raw["state_dict"]
        if not isinstance(entries, Mapping):
            raise CheckpointError(f"{path}: the 'state_dict' entry is a {type(entries).__name__}, not a dict")
    elif isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        entries = raw  # a bare state dict
    else:
        raise CheckpointError(
            f"{path}: expected a dict with a 'state_dict' entry, or a state dict (names -> tensors)"
        )
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in entries.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a named tensor")
        name = key.removeprefix("module.")
        if name in state_dict:
            raise CheckpointError(f"{path}: state dict holds {name} twice (with and without 'module.')")
        state_dict[name] = value
    return state_dict


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelDims]:
    """The state dict and model sizes of a checkpoint file (any accepted layout), loaded safely."""
    path = Path(path)
    raw = safe_load(path)
    state_dict = _state_dict_of(raw, path)
    dims = ModelDims.vit_b_32()
    if isinstance(raw, Mapping) and "caer_dims" in raw:
        try:
            dims = ModelDims(**raw["caer_dims"])
        except TypeError as e:
            raise CheckpointError(f"{path}: bad 'caer_dims' entry ({e})") from e
    return state_dict, dims


def load_model(path: Path) -> ClipCaer:
    """Build CLIP-CAER from a checkpoint file, strictly; eval mode, fp32, CPU."""
    state_dict, dims = read_checkpoint(path)
    model = ClipCaer(dims)
    check_state_dict(model, state_dict, str(path))
    model.load_state_dict(state_dict, strict=True)
    model.eot_positions.copy_(eot_positions(state_dict, dims, str(path)))
    return model.float().eval()


def save_checkpoint(model: ClipCaer, path: Path, include_dims: bool) -> None:
    """Write the official format; `include_dims` records non-standard sizes for tiny models."""
    raw: dict = {"state_dict": model.state_dict()}
    if include_dims:
        raw["caer_dims"] = model.dims.to_json()
    torch.save(raw, path)
