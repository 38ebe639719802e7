"""The object-store copy of a model version, built from bytes that were verified: what a cold load puts.

Kept out of the RegistryActor so that it is plain Python, tested without Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.registry.artifacts import hot_payload, load_state_dict_file, state_dict_file, state_payload
from factory.registry.catalog import ModelRegistry, label_of
from factory.registry.storage import FileEntry
from factory.store import ModelVersionRow


def hot_copy(registry: ModelRegistry, row: ModelVersionRow, scratch_dir: Path) -> tuple[dict[str, Any], int]:
    """The version's object-store payload and its size in bytes; every byte loaded was hashed first.

    A state_dict is copied while it is hashed (`ArtifactStorage.verified_copy`: in memory on Linux, else a
    file under `scratch_dir`), then memory-mapped from that copy: one copy of the weights besides the
    object store's, and the mapping outlives the copy's handle until the payload is put. Other kinds are
    read into memory, verified. A missing, short or changed file raises `ArtifactCorruptError`.
    """
    if row.kind == "state_dict":
        relpath = state_dict_file(row.files)
        with registry.storage.verified_copy(row.artifact_key, relpath, FileEntry(**row.files[relpath]),
                                            label_of(row), scratch_dir) as copy:
            return state_payload(load_state_dict_file(copy))
    return hot_payload(row.kind, registry.read_files(row))
