"""What a registered version holds, and how it travels: the kinds, and the hot copy's layout.

Kinds:
  state_dict -- one file, `model.pt`: a torch `state_dict` (loadable with `weights_only=True`).
                Loaded as a dict of tensors.
  checkpoint -- a Ray Train checkpoint directory. Loaded as a `ray.train.Checkpoint` on a local copy.
  directory  -- any files. Loaded as the `Path` of a local copy.

The hot copy (what the RegistryActor keeps in the object store) holds numpy arrays, which Ray reads
zero-copy on the same node: a state_dict's tensors as arrays (dtypes numpy lacks, e.g. bfloat16, and
non-tensor values travel pickled), a directory's files as uint8 arrays. Tensors made from it share
the object store's read-only memory: copy one before writing to it in place.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from factory.errors import FactoryError
from factory.registry.refs import version_ref

KINDS = ("state_dict", "checkpoint", "directory")
STATE_DICT_FILE = "model.pt"
DIGEST_MARKER = ".factory-digest"
# Tensors over the object store's read-only memory are intended (see above): not a warning per load. Only
# for calls made from this module.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning,
                        module=__name__)


def infer_kind(path: Path) -> str:
    """The kind of a local artifact: a `.pt`/`.pth` file is a state_dict, anything else a directory."""
    return "state_dict" if path.is_file() and path.suffix in (".pt", ".pth") else "directory"


def check_kind(kind: str) -> str:
    """`kind` if known, else a one-line error listing the kinds."""
    if kind not in KINDS:
        raise FactoryError(f"artifact kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    return kind


def check_state_dict(state: Mapping[str, Any]) -> None:
    """Refuse a state_dict that `torch.load(weights_only=True)` could not read back (one line)."""
    for key, value in state.items():
        if not _weights_only(value):
            raise FactoryError(f"state_dict entry {key!r} holds a {type(value).__name__}, which cannot be "
                               "loaded safely: only tensors, numbers, strings and containers of them")


def _weights_only(value: Any) -> bool:
    """Whether `torch.load(weights_only=True)` reads `value` back (checked without a second read)."""
    import torch

    if value is None or isinstance(value, torch.Tensor | int | float | bool | str | bytes | torch.dtype
                                   | torch.Size):
        return True
    if isinstance(value, list | tuple | set):
        return all(_weights_only(item) for item in value)
    if isinstance(value, Mapping):
        return all(_weights_only(k) and _weights_only(v) for k, v in value.items())
    return False


def hot_payload(kind: str, files: Mapping[str, bytes]) -> tuple[dict[str, Any], int]:
    """The object-store copy of a version's verified files, and its size in bytes."""
    if kind != "state_dict":
        arrays = {path: np.frombuffer(data, dtype=np.uint8) for path, data in files.items()}
        return {"kind": kind, "files": arrays}, sum(len(data) for data in files.values())
    return state_payload(load_state_dict_bytes(files[state_dict_file(files)]))


def state_payload(state: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The object-store copy of a state_dict (tensors as numpy arrays), and its size in bytes."""
    arrays: dict[str, np.ndarray] = {}
    others: dict[str, Any] = {}
    for key, value in state.items():
        array = _as_array(value)
        if array is None:
            others[key] = value
        else:
            arrays[key] = array
    size_bytes = sum(a.nbytes for a in arrays.values()) + sum(_tensor_bytes(v) for v in others.values())
    return {"kind": "state_dict", "order": list(state), "arrays": arrays, "others": others}, size_bytes


def from_hot_payload(payload: Mapping[str, Any], name: str, version: int, digest: str,
                     cache_dir: Path) -> Any:
    """The loaded object: a state_dict, a `ray.train.Checkpoint` or a `Path` (local copy under cache_dir)."""
    if payload["kind"] == "state_dict":
        import torch

        arrays, others = payload["arrays"], payload["others"]
        return {key: torch.from_numpy(arrays[key]) if key in arrays else others[key]
                for key in payload["order"]}
    files = {path: bytes(memoryview(array)) for path, array in payload["files"].items()}
    return _as_loaded(payload["kind"], write_local_copy(files, cache_dir, name, version, digest))


def load_state_dict_file(path: Path) -> dict[str, Any]:
    """A state_dict from a verified local `model.pt`, memory-mapped (no copy until it is put elsewhere)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, Mapping):
        raise FactoryError(f"{path.name} holds a {type(state).__name__}, not a state_dict")
    return dict(state)


def load_state_dict_bytes(data: bytes) -> dict[str, Any]:
    """A state_dict from the bytes of `model.pt` (weights only: no code runs on load)."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise FactoryError(f"{STATE_DICT_FILE} holds a {type(state).__name__}, not a state_dict")
    return dict(state)


def write_local_copy(files: Mapping[str, bytes], cache_dir: Path, name: str, version: int,
                     digest: str) -> Path:
    """Write a version's (verified) files under `cache_dir/name/v<version>-<digest>`; return the directory.

    The copy appears whole or not at all (written aside, then renamed). An existing copy is reused only
    if it holds exactly these files with exactly these bytes; any other is replaced.
    """
    import shutil

    target = cache_dir / name / f"v{version}-{digest[:16]}"
    if _holds_exactly(target, files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=target.parent))
    for path, data in files.items():
        destination = staging / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)
    (staging / DIGEST_MARKER).write_text(digest)
    if target.exists():  # damaged or different: set it aside (renames are atomic), then replace it
        aside = Path(tempfile.mkdtemp(prefix=f".old-v{version}-", dir=target.parent))
        os.replace(target, aside / "copy")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process put its copy there meanwhile: use it if it is right
        shutil.rmtree(staging, ignore_errors=True)
        if not _holds_exactly(target, files):
            raise FactoryError(f"the local copy of {version_ref(name, version)} at {target} keeps changing; "
                               "remove it and load again") from None
    return target


def _holds_exactly(directory: Path, files: Mapping[str, bytes]) -> bool:
    """Whether `directory` holds these files (and no others) with these very bytes."""
    if not directory.is_dir():
        return False
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    if present - {DIGEST_MARKER} != set(files):
        return False
    return all((directory / path).read_bytes() == data for path, data in files.items())


def _as_loaded(kind: str, directory: Path) -> Any:
    if kind == "checkpoint":
        from ray.train import Checkpoint

        return Checkpoint.from_directory(str(directory))
    return directory


def state_dict_file(paths: Any) -> str:
    """Which file of a state_dict version holds the weights."""
    names = [p for p in paths if p != DIGEST_MARKER]
    if STATE_DICT_FILE in names:
        return STATE_DICT_FILE
    candidates = [p for p in names if p.endswith((".pt", ".pth"))]
    if len(candidates) != 1:
        raise FactoryError(f"a state_dict version holds one .pt file; this one holds {sorted(names)}")
    return candidates[0]


def _as_array(value: Any) -> np.ndarray | None:
    import torch

    if not isinstance(value, torch.Tensor):
        return None
    try:
        return value.detach().cpu().contiguous().numpy()
    except TypeError:  # a dtype numpy lacks (bfloat16, ...): travels as a tensor
        return None


def _tensor_bytes(value: Any) -> int:
    import torch

    return value.element_size() * value.nelement() if isinstance(value, torch.Tensor) else 0
