"""The factory's Serve backend rides out Serve replacing an HTTP proxy that was slow to start.

Serve's controller gives a new proxy a few readiness checks (5 s each, longer for each replacement) and
replaces one that misses them; on a busy machine the proxy `serve.start` waits for can die that way.
Serve itself is faked here (fault injection): the live path is tests/integration/test_serving.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import ray
from ray import serve

import actors.serving
from actors.serving import RayServe
from factory.config import ServingConfig
from factory.serving.backend import ServeUnavailableError
from factory.serving.endpoints import Endpoint


class FakeServe:
    """`serve.start` whose proxy died waiting; `serve.status` showing the proxies in `statuses`, in turn
    (an exception there is raised: Serve between two proxies)."""

    def __init__(self, *statuses: dict[str, str] | Exception) -> None:
        self.statuses, self.starts = list(statuses), 0
        self.start_error: Exception | None = ray.exceptions.ActorDiedError()  # its proxy was replaced

    def start(self, **_: Any) -> None:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error

    def status(self) -> SimpleNamespace:
        proxies = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(proxies, Exception):
            raise proxies
        return SimpleNamespace(proxies=proxies, applications={})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServe:
    fake = FakeServe({}, {"node-1": "STARTING"}, ray.exceptions.RayActorError(), {"node-1": "UNHEALTHY"},
                     {"node-1": "HEALTHY"})
    monkeypatch.setattr(serve, "start", fake.start)
    monkeypatch.setattr(serve, "status", fake.status)
    monkeypatch.setattr(actors.serving.time, "sleep", lambda _s: None)
    return fake


def test_a_proxy_replaced_while_serve_starts_is_waited_for_not_an_error(fake: FakeServe) -> None:
    backend = RayServe(ServingConfig())

    backend._ensure_started()
    backend._ensure_started()  # started once

    assert fake.starts == 1 and fake.statuses == [{"node-1": "HEALTHY"}]


def test_a_proxy_that_never_comes_up_is_one_error_naming_serve(fake: FakeServe,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake.statuses = [{"node-1": "STARTING"}]
    monkeypatch.setattr(actors.serving, "SERVE_APPLY_TIMEOUT_S", -1.0)  # the bound has passed

    with pytest.raises(ServeUnavailableError, match=r"Serve's HTTP proxy did not start .*node-1.*STARTING"):
        RayServe(ServingConfig())._ensure_started()


def test_a_proxy_that_fails_to_construct_is_an_error_at_once(fake: FakeServe) -> None:
    fake.start_error = ray.exceptions.ActorDiedError.from_task_error(
        ray.exceptions.RayTaskError("ProxyActor.__init__", "Traceback ...", OSError("port 8000 in use")))

    with pytest.raises(ServeUnavailableError, match="could not start"):
        RayServe(ServingConfig())._ensure_started()
    assert len(fake.statuses) == 5  # not waited for


def test_serve_started_before_is_waited_for_too(fake: FakeServe) -> None:
    fake.start_error = None  # `serve.start` finds Serve's controller and returns without waiting

    RayServe(ServingConfig())._ensure_started()

    assert fake.statuses == [{"node-1": "HEALTHY"}]  # it waited for the proxy all the same


def test_serve_gone_during_a_deploy_is_serve_down_not_a_refusal(fake: FakeServe,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake.start_error, fake.statuses = None, [{"node-1": "HEALTHY"}]

    def controller_gone(*_: Any, **__: Any) -> None:
        raise ray.exceptions.ActorDiedError()

    monkeypatch.setattr(serve, "run_many", controller_gone)
    backend = RayServe(ServingConfig())
    endpoint = Endpoint(name="reg", model="reg", route="/models/reg", stable_version=1, created_s=0.0,
                        updated_s=0.0)

    with pytest.raises(ServeUnavailableError, match="Serve is not up"):
        backend.apply(endpoint)
    assert not backend._started  # the next apply waits for Serve again
