"""The registry's rules over the state store and the artifact storage: commit, resolve, aliases, cards.

Invariants:
  * A version is visible once its row is committed, and its row is committed only after every file
    is in storage with its checksum (`ArtifactStorage.stage` wrote them; `commit` checks they are
    there). Versions are numbered per name by the store, in the committing transaction.
  * Files read back are verified against their sha256 first (`ArtifactStorage.read_bytes`); a version
    that fails is reported, named, and never returned.
  * An alias moves in one transaction with its history entry; a version it points at exists.
  * Pure apart from the store and the storage: the RegistryActor wraps it, tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from factory.errors import FactoryError
from factory.registry.artifacts import check_kind
from factory.registry.refs import ModelRef, check_alias, check_name
from factory.registry.storage import ArtifactStorage, FileEntry, StagedArtifact
from factory.store import AliasChange, ModelVersionRow, StateStore
from factory.suggest import did_you_mean


class ModelNotFoundError(FactoryError):
    """A model, version or alias that the registry does not have."""


class ModelRegistry:
    """Versions, aliases and cards of the models in one store, with artifacts in one storage."""

    def __init__(self, store: StateStore, storage: ArtifactStorage, now_s: Callable[[], float]) -> None:
        self.store, self.storage, self._now_s = store, storage, now_s

    # -- writing -------------------------------------------------------------------------------------

    def commit(self, staged: StagedArtifact, name: str, kind: str, *, description: str = "",
               tags: dict[str, str] | None = None, lineage: dict[str, Any] | None = None,
               registered_by: str = "", serving: dict[str, Any] | None = None) -> ModelVersionRow:
        """Make a staged artifact the next version of `name`; return the committed row."""
        check_name(name)
        check_kind(kind)
        tags = {str(key): str(value) for key, value in (tags or {}).items()}
        for key in tags:
            check_name(key, "tag key")
        self.storage.check_present(staged.key, staged.files, f"model '{name}' (being registered)")
        return self.store.add_model_version(ModelVersionRow(
            name=name, kind=kind, storage_uri=self.storage.uri, artifact_key=staged.key,
            files={path: entry.model_dump() for path, entry in staged.files.items()}, digest=staged.digest,
            size_bytes=staged.size_bytes, description=description, tags=tags, lineage=lineage or {},
            registered_s=self._now_s(), registered_by=registered_by, serving=dict(serving or {})))

    def set_alias(self, name: str, alias: str, version: int, set_by: str = "",
                  if_last_change: int | None = None) -> AliasChange:
        """Point `alias` at `version` of `name` (which must exist); with `if_last_change`, only if the
        alias's latest move is still that one (`StateStore.set_model_alias`)."""
        check_alias(alias)
        if version < 1:
            raise ModelNotFoundError(f"model '{name}': versions start at 1, not {version}")
        self.resolve(ModelRef(name, version=version))
        return self.store.set_model_alias(name, alias, version, self._now_s(), set_by, if_last_change)

    # -- reading -------------------------------------------------------------------------------------

    def resolve(self, ref: ModelRef) -> ModelVersionRow:
        """The version `ref` names (newest if neither version nor alias); a one-line error if none."""
        latest = self.store.latest_model_version(ref.name)
        if latest is None:
            known = [summary["name"] for summary in self.summaries()]  # the error path only
            hint = did_you_mean(ref.name, known, lead="; ", otherwise="; `factory models` lists them"
                                if known else "; none is registered yet")
            raise ModelNotFoundError(f"model '{ref.name}' is not in the registry{hint}")
        if ref.alias is not None:
            aliases = self.store.model_aliases(ref.name).get(ref.name, {})
            if ref.alias not in aliases:
                have = ", ".join(sorted(aliases)) or "none"
                raise ModelNotFoundError(
                    f"model '{ref.name}' has no alias '{ref.alias}' (aliases: {have}); "
                    f"set one with `factory promote {ref.name} VERSION --alias {ref.alias}`")
            version = aliases[ref.alias]
        else:
            version = ref.version if ref.version is not None else latest
        row = self.store.get_model_version(ref.name, version)
        if row is None:
            raise ModelNotFoundError(f"model '{ref.name}' has no version {version} (versions 1-{latest})")
        return row

    def read_files(self, row: ModelVersionRow) -> dict[str, bytes]:
        """Every file of a version, each verified against its sha256."""
        label = label_of(row)
        return {path: self.storage.read_bytes(row.artifact_key, path, FileEntry(**entry), label)
                for path, entry in sorted(row.files.items())}

    def summaries(self) -> list[dict[str, Any]]:
        """One entry per model: versions, the newest, aliases, bytes stored, last registration."""
        aliases = self.store.model_aliases()
        models: dict[str, dict[str, Any]] = {}
        for row in self.store.list_model_versions():
            entry = models.setdefault(row.name, {"name": row.name, "versions": 0, "size_bytes": 0})
            entry["versions"] += 1
            entry["size_bytes"] += row.size_bytes
            entry.update(latest=row.version, kind=row.kind, registered_s=row.registered_s,
                         description=row.description or entry.get("description", ""))
        for name, entry in models.items():
            entry["aliases"] = aliases.get(name, {})
        return [models[name] for name in sorted(models)]

    def card(self, ref: ModelRef) -> dict[str, Any]:
        """A version with everything needed to trust it: files, checksums, lineage, its aliases."""
        row = self.resolve(ref)
        aliases = self.store.model_aliases(row.name).get(row.name, {})
        history = self.store.model_alias_history(row.name)
        return {**row.model_dump(), "aliases": sorted(a for a, v in aliases.items() if v == row.version),
                "all_aliases": aliases, "alias_history": [change.model_dump() for change in history],
                "versions": [r.version for r in self.store.list_model_versions(row.name)]}

    def find_by_job(self, job_id: str) -> ModelVersionRow | None:
        """The version a job registered, if any."""
        return next((row for row in self.store.list_model_versions()
                     if row.lineage.get("job_id") == job_id), None)


def label_of(row: ModelVersionRow) -> str:
    """How errors name a version: model 'NAME' vN."""
    return f"model '{row.name}' v{row.version}"
