"""`factory.ray_compat` pins each private Ray API the factory uses (Ray 2.60), and no other module uses one.

A Ray upgrade that moves or changes one of these helpers fails here, naming the function to fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
from ray import serve
from ray.exceptions import RaySystemError

from factory import ray_compat
from factory.ray_cluster import _split_host_port, dashboard_url

SOURCE = Path(__file__).resolve().parents[2]
# `ray._private`, Train's `v2._internal`, `from ray... import _helper`, Serve's `_internal=True` flag.
PRIVATE_RAY = re.compile(r"\bray(\.\w+)*\._\w|from ray(\.\w+)* import \(?\s*_\w|\b_internal=True")


def test_the_dashboard_url_is_rays_address_or_its_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_OVERRIDE_DASHBOARD_URL", raising=False)
    with pytest.raises(RaySystemError):  # not connected: Ray says so rather than guessing
        ray_compat.dashboard_url()

    monkeypatch.setenv("RAY_OVERRIDE_DASHBOARD_URL", "https://dash.example:8265")
    assert ray_compat.dashboard_url() == "dash.example:8265"
    assert dashboard_url() == "http://dash.example:8265"


@pytest.mark.parametrize(("mode", "enabled"), [("token", True), ("disabled", False)])
def test_ray_auth_mode_decides_whether_the_token_is_sent(monkeypatch: pytest.MonkeyPatch, mode: str,
                                                         enabled: bool) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", mode)  # True proves Ray's helper was found, not the fallback

    assert ray_compat.use_token_auth_if_available() is enabled


def test_the_recorded_local_address_is_rays_record_of_the_last_ray_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert ray_compat.recorded_local_address() is None

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.7:6379\n")
    assert ray_compat.recorded_local_address() == "10.0.0.7:6379"


def test_the_local_gcs_addresses_are_rays_process_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray._private.services as services

    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset({"10.0.0.7:6379"}))
    assert ray_compat.local_gcs_addresses() == frozenset({"10.0.0.7:6379"})


@pytest.mark.parametrize(("address", "host_port"), [
    ("10.0.0.7:6379", ("10.0.0.7", 6379)), ("[::1]:6379", ("::1", 6379)), ("head:6379", ("head", 6379)),
    ("6379", None), ("[::1]", None),
])
def test_an_address_splits_into_host_and_port_ipv6_without_brackets(
    address: str, host_port: tuple[str, int] | None
) -> None:
    assert _split_host_port(address) == host_port


def test_a_plain_process_is_neither_a_train_worker_nor_a_tune_trial() -> None:
    assert ray_compat.in_train_worker() is False
    assert ray_compat.in_tune_session() is False


def test_the_code_version_is_set_where_public_options_refuse_it() -> None:
    @serve.deployment
    class Echo:
        def __call__(self) -> int:
            return 1

    with pytest.raises(ValueError, match="version"):
        Echo.options(version="v1")

    versioned = ray_compat.with_code_version(Echo, "v1", num_replicas=2)
    assert (versioned.version, versioned.num_replicas) == ("v1", 2)


def test_an_actors_state_is_unknown_without_a_cluster() -> None:
    class Handle:  # what a handle keeps: its actor's id
        _actor_id = bytes(16)

    assert ray_compat.actor_state(Handle()) is None  # not connected: the caller decides without it


def test_no_other_source_module_uses_a_private_ray_api() -> None:
    users = sorted(str(path.relative_to(SOURCE)) for package in ("factory", "actors", "deployments")
                   for path in (SOURCE / package).rglob("*.py") if PRIVATE_RAY.search(path.read_text()))
    assert users == ["factory/ray_compat.py"]
