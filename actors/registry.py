"""RegistryActor: the model registry's one writer, and the keeper of hot copies in the object store.

Registration is split so that big files never pass through the actor: the caller stages the files
into the artifact storage (`ArtifactStorage.stage`, checksummed while written) and the actor commits
the version (`commit`): one transaction, numbered per name. A caller that dies between the two leaves
an orphan directory that no version points at, never a half version.

`fetch` answers with an object-store reference to the version's weights: the hot copy if the LRU
cache (`registry.cache_bytes`) holds it, else loaded from storage (checksums verified) and cached.
The references are owned by this actor: if it dies they go with it, and the next fetch reloads from
storage (the client retries once). Several calls are served at once, so the cache and the store
are thread-safe; reads of storage have their own threads (concurrency group `storage_reads`), so
slow loads never hold up a commit, an alias move or a listing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import ray

from actors.control_plane import ControlPlaneActor
from factory.errors import FactoryError
from factory.jobs.stored import run_result, stored_spec, submitted_lineage
from factory.registry.cache import HotCache
from factory.registry.catalog import ModelRegistry, label_of
from factory.registry.hot import hot_copy
from factory.registry.lineage import job_lineage
from factory.registry.refs import alias_ref, make_ref, version_ref
from factory.registry.storage import ArtifactCorruptError, ArtifactStorage, StagedArtifact
from factory.store import ModelVersionRow

STORAGE_READS = "storage_reads"


class RegistryActor(ControlPlaneActor):
    """The model registry's actor."""

    kind = "registry"
    # Reads of storage (loads, verifications, a job's checkpoint) run in their own threads, so that
    # slow ones never hold up commits, alias moves and listings (the default group).
    max_concurrency = 4
    concurrency_groups = {STORAGE_READS: 4}

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        self.storage = ArtifactStorage(self.config.registry.storage_location(self.config.state_dir))
        assert self.clock is not None
        self.registry = ModelRegistry(self.store, self.storage, self.clock.now_s)
        self.cache = HotCache(self.config.registry.cache_bytes)
        self._loading: dict[tuple[str, Any], threading.Lock] = {}
        self._loading_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------------

    def storage_uri(self) -> str:
        """Where callers stage artifacts before `commit`."""
        return self.storage.uri

    def commit(self, staged: dict[str, Any], name: str, kind: str, description: str = "",
               tags: dict[str, str] | None = None, lineage: dict[str, Any] | None = None,
               registered_by: str = "", serving: dict[str, Any] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
        """Make a staged artifact the next version of `name`, audited in the same transaction; return its row.

        A `FactoryError` means nothing was committed (the caller may delete the staged files). A
        `request_id` already taken effect returns the version it committed, and commits no other.
        """
        def commit() -> dict[str, Any]:
            row = self.registry.commit(StagedArtifact.model_validate(staged), name, kind,
                                       description=description, tags=tags, lineage=lineage,
                                       registered_by=registered_by, serving=serving)
            self.audit("model.registered", version_ref(row.name, row.version), actor=registered_by or None,
                       digest=row.digest, size_bytes=row.size_bytes, kind=row.kind,
                       job_id=row.lineage.get("job_id"))
            return row.model_dump(mode="json")

        with self.store.transaction():
            return self.store.once(request_id, "model.register", self._now_s(), commit)

    def set_alias(self, name: str, alias: str, version: int, set_by: str = "",
                  request_id: str | None = None, if_last_change: int | None = None) -> dict[str, Any]:
        """Move `alias` of `name` to `version`; audit it. A `request_id` that took effect moves nothing;
        with `if_last_change`, only an alias not moved since that change moves (else `AliasMovedError`)."""
        def move() -> dict[str, Any]:
            change = self.registry.set_alias(name, alias, int(version), set_by, if_last_change)
            self.audit("model.alias", alias_ref(name, alias), actor=set_by or None, version=change.version,
                       from_version=change.from_version)
            return change.model_dump(mode="json")

        with self.store.transaction():
            return self.store.once(request_id, "model.alias", self._now_s(), move)

    def _now_s(self) -> float:
        assert self.clock is not None
        return self.clock.now_s()

    @ray.method(concurrency_group=STORAGE_READS)
    def register_job(self, job_id: str) -> dict[str, Any] | None:
        """Register the checkpoint a succeeded train/tune job left, with its lineage (once per job)."""
        with self._lock_for(("job", job_id)):  # a scheduler restarted meanwhile may ask twice
            return self._register_job(job_id)

    def _register_job(self, job_id: str) -> dict[str, Any] | None:
        existing = self.registry.find_by_job(job_id)
        if existing is not None:
            return existing.model_dump()
        job = self.store.get_job(job_id)
        spec = stored_spec(job) if job is not None else None
        if job is None or spec is None or spec.register_as is None:
            return None
        name = spec.register_as
        checkpoint = run_result(job).checkpoint_path
        if not checkpoint or not Path(checkpoint).is_dir():
            raise FactoryError(f"job {job_id} succeeded without a checkpoint to register as "
                               f"'{name}' (its loop must call save_checkpoint)")
        # The parent as resolved when the job was submitted (an alias may have moved since).
        parent = submitted_lineage(job).parent
        staged = self.storage.stage(checkpoint, name)
        try:
            return self.commit(staged.model_dump(), name, "checkpoint",
                               description=f"trained by job {job.name} ({job_id})",
                               tags={"team": job.team, "job": job.name},
                               lineage=job_lineage(job, parent), registered_by="scheduler",
                               serving={"predictor": spec.predictor} if spec.predictor else {})
        except FactoryError:  # refused: its transaction rolled back, so nothing points at the files
            self.storage.delete(staged.key)
            raise

    # -- reading -------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """One summary per model."""
        return self.registry.summaries()

    def model(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """A version's card."""
        return self.registry.card(make_ref(name, version, alias))

    @ray.method(concurrency_group=STORAGE_READS)
    def fetch(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """{row, ref: [ObjectRef], cache: "hit" | "miss"}: the version's weights in the object store."""
        row = self.registry.resolve(make_ref(name, version, alias))
        key = (row.name, row.version)
        ref = self.cache.get(key)
        if ref is not None:
            return {"row": row.model_dump(), "ref": [ref], "cache": "hit"}
        with self._lock_for(key):  # one load per version at a time; the others then hit
            ref = self.cache.get(key, count=False)
            if ref is not None:
                return {"row": row.model_dump(), "ref": [ref], "cache": "hit"}
            try:
                payload, size_bytes = self._hot_copy(row)
            except ArtifactCorruptError as error:
                self.audit("model.corrupt", version_ref(row.name, row.version), error=str(error))
                raise
            ref = ray.put(payload)
            self.cache.put(key, ref, size_bytes)
        return {"row": row.model_dump(), "ref": [ref], "cache": "miss"}

    def _hot_copy(self, row: ModelVersionRow) -> tuple[dict[str, Any], int]:
        """The object-store payload of a version (`factory.registry.hot`), scratch in the state dir."""
        return hot_copy(self.registry, row, self.config.state_dir / "registry-scratch")

    @ray.method(concurrency_group=STORAGE_READS)
    def verify(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """Re-read a version's files from storage and check every sha256; raise naming a bad file."""
        row = self.registry.resolve(make_ref(name, version, alias))
        self.registry.read_files(row)
        return {"version": label_of(row), "files": len(row.files), "ok": True}

    def cache_stats(self) -> dict[str, Any]:
        """What the hot cache holds: entries, bytes, hits, misses, evictions, keys (LRU first)."""
        stats = self.cache.stats()
        return {"entries": stats.entries, "used_bytes": stats.used_bytes,
                "capacity_bytes": stats.capacity_bytes, "hits": stats.hits, "misses": stats.misses,
                "evictions": stats.evictions, "keys": [version_ref(n, v) for n, v in self.cache.keys()]}

    def _lock_for(self, key: tuple[str, Any]) -> threading.Lock:
        with self._loading_lock:
            return self._loading.setdefault(key, threading.Lock())
