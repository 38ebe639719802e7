"""What the SDK returns about models: a summary per model and a version's card."""

from __future__ import annotations

from pydantic import BaseModel, Field

from factory.store import AliasChange, ModelVersionRow


class ModelSummary(BaseModel):
    """One model in the registry: how many versions, the newest, its aliases, bytes stored."""

    name: str
    versions: int
    latest: int
    kind: str
    size_bytes: int
    registered_s: float = Field(description="Factory time the newest version was registered.")
    description: str = ""
    aliases: dict[str, int] = Field(default_factory=dict)


class ModelCard(ModelVersionRow):
    """A version with everything needed to trust it: files and checksums, lineage, aliases."""

    aliases: list[str] = Field(default_factory=list, description="Aliases pointing at this version.")
    all_aliases: dict[str, int] = Field(default_factory=dict, description="Every alias of the model.")
    alias_history: list[AliasChange] = Field(default_factory=list)
    versions: list[int] = Field(default_factory=list, description="Every version of the model.")
