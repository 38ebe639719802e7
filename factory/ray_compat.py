"""The one module that touches Ray's private APIs; each function pins one of them (Ray 2.60).

Ray offers no public way to do these few things, so the factory asks its private helpers here and
nowhere else (tests/unit/test_ray_compat.py refuses a private Ray import in any other module and
pins what each helper does). A Ray upgrade that moves or changes one breaks that test and changes
only this file.

Invariants:
  * Imports of private modules happen inside the functions: importing this module costs nothing
    and works on a Ray without them.
  * Each function says what it falls back to when its helper is gone, or that it fails.
"""

from __future__ import annotations

import logging
from typing import Any


def dashboard_url() -> str:
    """The connected cluster's dashboard address as Ray reports it ("host:port", "" without a dashboard).

    Ray deprecated the helper in favour of `ray.init().address_info`, which a driver that connected
    earlier (or was started by `ray job submit`) does not have. Honours `RAY_OVERRIDE_DASHBOARD_URL`
    (its scheme removed); raises Ray's `RaySystemError` when this process is not connected.
    """
    from ray._private.worker import get_dashboard_url

    return get_dashboard_url() or ""


def use_token_auth_if_available() -> bool:
    """Send this machine's Ray auth token (`~/.ray/auth_token`) to the cluster this process connects to.

    Ray 2.60 does this by itself for a cluster it finds automatically and for `ray start --head`, but
    not for an address given explicitly. A cluster without auth ignores the token; `RAY_AUTH_MODE`,
    when set, still decides. Ray's notice about it is silenced (it would land in every CLI command's
    output). True when Ray turned token auth on; False when it did not or its helper is gone.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: it decides alone
        return False
    setup_logger = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = setup_logger.level
    setup_logger.setLevel(logging.ERROR)
    try:
        return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))
    finally:
        setup_logger.setLevel(level)


def recorded_local_address() -> str | None:
    """The GCS address Ray recorded for the last `ray start` on this machine, or None without a record.

    `ray.init(address="auto")` connects there (`<RAY_TMPDIR or /tmp>/ray/ray_current_cluster`) and,
    when the head died without `ray stop` (killed, out of memory, its container restarted), retries
    it for ever. Falls back to None when the helper is gone: Ray then decides alone.
    """
    try:
        from ray._private.utils import read_ray_address
    except ImportError:
        return None
    return read_ray_address() or None


def local_gcs_addresses() -> frozenset[str]:
    """The GCS addresses of the Ray processes running on this machine (Ray greps `ps` for them).

    `ray.init(address="auto")` connects to the only one when there is exactly one, whatever its record
    (`recorded_local_address`) says. Falls back to none found when the helper is gone.
    """
    try:
        from ray._private.services import find_gcs_addresses
    except ImportError:
        return frozenset()
    return frozenset(find_gcs_addresses())


def in_train_worker() -> bool:
    """Whether this process runs a training loop under a Ray Train v2 trainer (`ray.train` reports work)."""
    from ray.train.v2._internal.util import _in_ray_train_worker

    return bool(_in_ray_train_worker())


def in_tune_session() -> bool:
    """Whether this process runs a Ray Tune function trainable (`ray.tune` reports; `ray.train` raises)."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def with_code_version(deployment: Any, version: str, **options: Any) -> Any:
    """`deployment.options(**options)` with Serve's code `version` set.

    Ray 2.60 removed `version` from the public `Deployment.options()` ("Serve manages deployment
    versions internally") but still honours it behind the `_internal` flag. Without it every
    `serve.run` of the same application replaces all replicas; with it, replicas whose version is
    unchanged are kept (only a changed `user_config` is pushed to them).
    """
    return deployment.options(_internal=True, version=version, **options)


def actor_state(handle: Any) -> str | None:
    """Ray's state of the handle's actor ("ALIVE", "RESTARTING", "DEAD", ...), or None if it cannot tell.

    Ray's public state API (`ray.util.state.get_actor`) needs the dashboard; the GCS's actor table that
    it reads from is reached directly here, through the actor id that handles keep private. Falls back
    to None when the helper is gone or the GCS does not answer.
    """
    return actor_life(handle)[0]


def actor_life(handle: Any) -> tuple[str | None, int | None]:
    """The actor's state (as `actor_state`) and how many restarts Ray has begun for it, in one GCS query.

    Ray counts a restart when the actor enters RESTARTING, not once it is ALIVE again. Either is None
    when the GCS does not say (see `actor_state`).
    """
    try:
        from ray._private.state import state

        info = state.actor_table(handle._actor_id.hex())
    except Exception:  # noqa: BLE001 - another Ray, no connection: the caller decides without it
        return None, None
    if not info:
        return None, None
    restarts = info.get("NumRestarts")
    return (str(info["State"]) if "State" in info else None,
            int(restarts) if restarts is not None else None)
