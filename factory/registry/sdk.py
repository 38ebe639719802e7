"""The registry half of the SDK: register, list, inspect, load, promote (`FactoryClient` delegates here).

Registering stages the files from this process straight into the artifact storage, then asks the
RegistryActor to commit the version; if the commit fails the staged files are removed. Loading asks
the actor for the version's object-store copy (loaded from storage and verified on a miss) and turns
it into the object: a state_dict, a `ray.train.Checkpoint` or a `Path`.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from factory.control_plane import DEFAULT_RESTART_WAIT_S, REGISTRY, NamedActor, new_request_id
from factory.errors import ClusterError, FactoryError
from factory.registry.artifacts import (
    STATE_DICT_FILE,
    check_kind,
    check_state_dict,
    from_hot_payload,
    infer_kind,
)
from factory.registry.refs import check_name
from factory.registry.storage import ArtifactStorage, StagedArtifact
from factory.registry.views import ModelCard, ModelSummary
from factory.serving.predictor import check_import_path
from factory.store import AliasChange, ModelVersionRow

CALL_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 1800.0  # a miss reads the version from storage: a large model takes a while
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "factory-models"
# Versions never change once committed, so a reference to a version's hot copy stays right: the newest
# few are kept here and loaded again without asking the registry (an actor call costs ~1 ms; a get of
# the hot copy ~0.3 ms). They keep their objects alive while held, like any loaded model.
REMEMBERED_VERSIONS = 4


class RegistryClient:
    """The model registry, as seen from a driver connected to the factory's cluster."""

    def __init__(self, restart_wait_s: float = DEFAULT_RESTART_WAIT_S) -> None:
        self._actor = NamedActor(REGISTRY, restart_wait_s)  # its calls ride out a restart
        self._storage: ArtifactStorage | None = None
        self._remembered: OrderedDict[tuple[str, int], tuple[dict[str, Any], Any]] = OrderedDict()

    def register(self, source: str | Path | Mapping[str, Any], name: str, *, kind: str | None = None,
                 tags: Mapping[str, str] | None = None, description: str = "",
                 lineage: Mapping[str, Any] | None = None, registered_by: str = "",
                 predictor: str | None = None, request_id: str | None = None) -> ModelVersionRow:
        """Register a directory, a file or an in-memory state_dict as the next version of `name`.

        `predictor` (`module.path:Class`, see `factory.serving.predictor`) is what serves the version.
        A registration with the `request_id` of one that took effect returns that version, adding none.
        """
        request_id = request_id or new_request_id()
        check_name(name)
        serving = {"predictor": check_import_path(predictor)} if predictor else {}
        if isinstance(source, Mapping):
            import torch

            check_state_dict(source)
            state = dict(source)
            storage = self._storage_here()
            staged = storage.stage_stream(name, STATE_DICT_FILE, lambda out: torch.save(state, out))
            return self._commit(staged, name, check_kind(kind or "state_dict"), tags, description, lineage,
                                registered_by, serving, request_id)
        path = Path(source).expanduser()
        if not path.exists():
            raise FactoryError(f"cannot register {path}: no such file or directory")
        staged = self._storage_here().stage(path, name)
        return self._commit(staged, name, check_kind(kind or infer_kind(path)), tags, description, lineage,
                            registered_by, serving, request_id)

    def models(self) -> list[ModelSummary]:
        """Every model: versions, the newest, aliases, bytes stored."""
        return [ModelSummary.model_validate(m) for m in self._call("models")]

    def model(self, name: str, version: int | None = None, alias: str | None = None) -> ModelCard:
        """A version's card (the newest without version or alias)."""
        return ModelCard.model_validate(self._call("model", name, version, alias))

    def set_alias(self, name: str, alias: str, version: int, set_by: str = "",
                  request_id: str | None = None) -> AliasChange:
        """Point `alias` at `version` (atomically; the move is kept in the alias's history).

        A move with the `request_id` of one that took effect returns that move, recording no other.
        """
        answer = self._call("set_alias", name, alias, version, set_by,
                            request_id=request_id or new_request_id())
        return AliasChange.model_validate(answer)

    def load(self, name: str, version: int | None = None, alias: str | None = None, *,
             cache_dir: Path | None = None) -> Any:
        """The version's contents, through the object store: a state_dict, a Checkpoint or a Path.

        A version loaded lately (by number) is read straight from its hot copy; an alias or "the newest"
        is resolved by the registry every time, since those move.
        """
        return self.load_version(name, version, alias, cache_dir=cache_dir)[1]

    def load_version(self, name: str, version: int | None = None, alias: str | None = None, *,
                     cache_dir: Path | None = None) -> tuple[dict[str, Any], Any]:
        """(the version's row, its contents): `load`, also saying which version it was and how to serve it."""
        remembered = self._remembered.get((name, version)) if version is not None else None
        if remembered is not None:
            self._remembered.move_to_end((name, version))
            row, ref = remembered
            try:
                return row, self._materialise(row, ray.get(ref), cache_dir)  # a hot copy: no wait
            except (ray.exceptions.OwnerDiedError, ray.exceptions.ObjectLostError):
                del self._remembered[(name, version)]  # the registry restarted: ask it again
        for attempt in range(2):
            answer = self._call("fetch", name, version, alias, timeout_s=LOAD_TIMEOUT_S)
            try:
                payload = ray.get(answer["ref"][0], timeout=LOAD_TIMEOUT_S)
                break
            except (ray.exceptions.OwnerDiedError, ray.exceptions.ObjectLostError):
                if attempt:  # the registry restarted twice in one load: let the error speak
                    raise
                # The registry actor restarted and its hot copies went with it: it reloads from storage.
        row = answer["row"]
        self._remember(row, answer["ref"][0])
        return row, self._materialise(row, payload, cache_dir)

    def _remember(self, row: dict[str, Any], ref: Any) -> None:
        self._remembered[(row["name"], int(row["version"]))] = (row, ref)
        self._remembered.move_to_end((row["name"], int(row["version"])))
        while len(self._remembered) > REMEMBERED_VERSIONS:
            self._remembered.popitem(last=False)

    @staticmethod
    def _materialise(row: dict[str, Any], payload: Any, cache_dir: Path | None) -> Any:
        return from_hot_payload(payload, row["name"], row["version"], row["digest"],
                                cache_dir or DEFAULT_CACHE_DIR)

    def fetch_info(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """{row, ref, cache}: the raw answer of a fetch (did it hit the hot cache?), for tools and tests."""
        return self._call("fetch", name, version, alias, timeout_s=LOAD_TIMEOUT_S)

    def verify(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """Re-read a version from storage and check every checksum."""
        return self._call("verify", name, version, alias, timeout_s=LOAD_TIMEOUT_S)

    def cache_stats(self) -> dict[str, Any]:
        """The hot cache: entries, bytes used and capacity, hits, misses, evictions."""
        return self._call("cache_stats")

    def _commit(self, staged: StagedArtifact, name: str, kind: str, tags: Mapping[str, str] | None,
                description: str, lineage: Mapping[str, Any] | None, registered_by: str,
                serving: dict[str, Any], request_id: str) -> ModelVersionRow:
        storage = self._storage_here()
        try:
            row = self._call("commit", staged.model_dump(), name, kind, description, dict(tags or {}),
                             dict(lineage or {}), registered_by, serving, request_id=request_id)
        except ClusterError:
            raise  # no answer: the commit may still happen, so the files stay (an orphan at worst)
        except FactoryError:
            storage.delete(staged.key)  # refused, rolled back: nothing points at the files
            raise
        return ModelVersionRow.model_validate(row)

    def _storage_here(self) -> ArtifactStorage:
        if self._storage is None:
            self._storage = ArtifactStorage(self._call("storage_uri"))
        return self._storage

    def _call(self, method: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S, **kwargs: Any) -> Any:
        return self._actor.call(method, *args, timeout_s=timeout_s, **kwargs)
