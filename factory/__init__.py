"""AI Factory on Ray: price- and energy-aware training, a model registry with lineage, serving.

`client = factory.connect()` gives a typed client over a running factory (see `factory.client`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.version import __version__

if TYPE_CHECKING:
    from factory.client import FactoryClient


def connect(address: str | None = None) -> FactoryClient:
    """Connect to the factory running on the Ray cluster at `address` (see `factory.client.connect`)."""
    from factory.client import connect as _connect  # keeps `import factory` free of Ray start-up

    return _connect(address)


__all__ = ["__version__", "connect"]
