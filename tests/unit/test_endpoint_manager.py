"""The endpoints' state manager without Ray: a real store and registry, Serve and the clocks faked.

What the ServingActor's watch loop does each round (`EndpointManager.update`) and how a change reaches
Serve (write ahead, restore on refusal) are decided here; the actor only hands in Ray Serve.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.config import ServingConfig
from factory.errors import FactoryError
from factory.registry.catalog import ModelRegistry
from factory.registry.storage import ArtifactStorage
from factory.serving.backend import ServeUnavailableError
from factory.serving.endpoints import Endpoint, EndpointNotFoundError
from factory.serving.manager import EndpointManager
from factory.serving.stats import empty_counts, record
from factory.store import AuditEvent, SQLiteStore

PREDICTOR = {"predictor": "factory.examples.regression:RegressionPredictor"}


class FakeServe:
    """Ray Serve stood in for: what was applied and deleted, and a switch to refuse applies."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.applied: list[tuple[str, int, int | None]] = []  # (endpoint, stable, canary)
        self.deleted: list[str] = []
        self.refuse: set[int] = set()  # stable versions Serve cannot run
        self.refuse_canaries: set[int] = set()  # canary versions Serve cannot run
        self.fail_deletes = False  # Serve's delete fails (its controller is busy)
        self.stored_when_applied: list[dict[str, Any]] = []
        self.running: set[str] = set()  # the apps Serve runs
        self.die_in: set[str] = set()  # "apply", "delete": the actor's process dies while Serve does it
        self.down: bool | Exception = False  # Serve is not up (its HTTP proxy did not start), or this
        self.while_applying: list[Callable[[], None]] = []  # what happens meanwhile, one per apply

    def apply(self, endpoint: Endpoint) -> None:
        self.stored_when_applied.append(self.store.list_endpoints().get(endpoint.name, {}))
        if self.while_applying:
            self.while_applying.pop(0)()
        if isinstance(self.down, Exception):
            raise self.down
        if self.down:
            raise ServeUnavailableError("Serve's HTTP proxy did not start within 300 s")
        if endpoint.stable_version in self.refuse or endpoint.canary_version in self.refuse_canaries:
            raise FactoryError(f"Serve could not deploy endpoint '{endpoint.name}': replicas crashed")
        self.running.add(endpoint.name)
        if "apply" in self.die_in:  # Serve goes on applying; the actor that asked is gone
            raise KeyboardInterrupt
        self.applied.append((endpoint.name, endpoint.stable_version, endpoint.canary_version))

    def delete(self, name: str) -> None:
        if "delete" in self.die_in:  # killed before Serve was asked
            raise KeyboardInterrupt
        if self.fail_deletes:
            raise RuntimeError("the Serve controller did not answer")
        self.deleted.append(name)
        self.running.discard(name)

    def replica_states(self) -> dict[str, dict[str, Any]]:
        return {name: {"status": "RUNNING", "replicas": 1, "running": 1} for name, _, _ in self.applied}


class Clocks:
    """Factory time and monotonic time, both moved by the test."""

    def __init__(self) -> None:
        self.factory_s, self.monotonic_s = 1_700_000_000.0, 100.0


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store = SQLiteStore(tmp_path / "factory.db")
        self.clocks = Clocks()
        self.registry = ModelRegistry(self.store, ArtifactStorage(str(tmp_path / "artifacts")),
                                      lambda: self.clocks.factory_s)
        self.serve = FakeServe(self.store)
        self.errors: list[str] = []
        self.sources = 0
        self.alias_moves: list[tuple[str, str, int, str]] = []
        self.settings = ServingConfig(canary_min_requests=20, canary_max_error_rate=0.05)

    def manager(self) -> EndpointManager:
        """A manager over the store as it is now (a fresh one is the actor after a restart)."""
        def audit(action: str, subject: str = "", actor: str | None = None, **detail: Any) -> int:
            return self.store.append_audit(AuditEvent(time_s=self.clocks.factory_s, actor=actor or "serving",
                                                      action=action, subject=subject, detail=detail))

        def move_alias(model: str, alias: str, version: int, by: str, if_last_change: int | None) -> int:
            change = self.registry.set_alias(model, alias, version, by, if_last_change)
            self.alias_moves.append((model, alias, version, by))
            return change.id

        return EndpointManager(self.store, self.registry, self.serve, self.settings,
                               now_s=lambda: self.clocks.factory_s, audit=audit,
                               record_error=lambda error: self.errors.append(str(error)),
                               move_alias=move_alias, monotonic_s=lambda: self.clocks.monotonic_s)

    def register(self, name: str = "reg", serving: dict[str, Any] | None = None) -> int:
        self.sources += 1
        source = self.tmp_path / f"source-{self.sources}"
        source.mkdir()
        (source / "model.pt").write_bytes(source.name.encode())
        staged = self.registry.storage.stage(source, name)
        serving = PREDICTOR if serving is None else serving
        return self.registry.commit(staged, name, "directory", serving=serving).version

    def actions(self) -> list[str]:
        """The endpoint audit events' actions, oldest first."""
        return [event.action for event in self.store.list_audit(action_prefix="endpoint")]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    made.store.close()


def counts(requests: int, errors: int = 0, latency_ms: float = 5.0) -> dict[str, Any]:
    made = empty_counts()
    for index in range(requests):
        record(made, latency_ms, 500 if index < errors else 200)
    return made


def test_a_deploy_is_stored_before_serve_is_told_and_audited(setup: Setup) -> None:
    setup.register()
    manager = setup.manager()

    endpoint = manager.deploy("reg:1", deployed_by="cli:alice")

    assert setup.serve.applied == [("reg", 1, None)]
    assert setup.serve.stored_when_applied[0]["stable_version"] == 1  # written ahead
    assert endpoint.route == "/models/reg" and setup.store.list_endpoints()["reg"]["stable_version"] == 1
    assert setup.actions() == ["endpoint.deployed"]


def test_a_deploy_retried_after_a_crash_before_its_record_deploys_once_in_every_record(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.register()
    setup.register()
    setup.manager().deploy("reg:1", request_id="req-first")
    crashing = setup.manager()

    def crash(*args: Any, **kwargs: Any) -> None:  # the actor dies after Serve deployed v2
        raise KeyboardInterrupt

    monkeypatch.setattr(setup.store, "once", crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.deploy("reg:2", deployed_by="cli:alice", request_id="req-2")
    monkeypatch.undo()
    assert setup.store.list_endpoints()["reg"]["stable_version"] == 2  # written ahead, not recorded
    assert setup.store.find_request("req-2") is None

    restarted = setup.manager()
    retried = restarted.deploy("reg:2", deployed_by="cli:alice", request_id="req-2")
    again = setup.manager().deploy("reg:2", deployed_by="cli:alice", request_id="req-2")

    assert retried.stable_version == again.stable_version == 2
    assert retried.history == [1]  # v2 joined once, not as its own predecessor
    assert setup.store.list_endpoints()["reg"]["history"] == [1]
    assert setup.actions() == ["endpoint.deployed", "endpoint.deployed"]  # v1, then v2 once
    assert setup.store.find_request("req-2").result["stable_version"] == 2  # type: ignore[union-attr]
    assert [applied[1] for applied in setup.serve.applied] == [1, 2, 2]  # the retry re-applied; the
    # resend after the record did not


def test_a_new_endpoint_serve_refuses_is_forgotten_and_the_error_raised(setup: Setup) -> None:
    setup.register()
    setup.serve.refuse.add(1)
    manager = setup.manager()

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.deploy("reg:1")

    assert manager.endpoints == {} and setup.store.list_endpoints() == {}
    assert setup.serve.deleted == ["reg"] and setup.actions() == []


def test_an_update_serve_refuses_restores_and_reapplies_the_previous_state(setup: Setup) -> None:
    setup.register(), setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    setup.serve.refuse.add(2)

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.deploy("reg:2")

    assert manager.endpoint("reg").stable_version == 1
    assert setup.store.list_endpoints()["reg"]["stable_version"] == 1
    assert setup.serve.applied == [("reg", 1, None), ("reg", 1, None)]


def test_an_endpoint_follows_its_alias_at_the_next_round(setup: Setup) -> None:
    setup.register(), setup.register()
    setup.registry.set_alias("reg", "production", 1)
    manager = setup.manager()
    manager.deploy("reg@production")
    manager.update()
    assert setup.serve.applied == [("reg", 1, None)]  # nothing moved: nothing applied

    setup.registry.set_alias("reg", "production", 2)
    manager.update()

    assert manager.endpoint("reg").stable_version == 2 and manager.endpoint("reg").history == [1]
    assert setup.serve.applied[-1] == ("reg", 2, None)
    rolled = setup.store.list_audit(action_prefix="endpoint.rolled")[0]
    assert rolled.detail["reason"] == "reg@production moved to v2"


def test_a_round_with_nothing_to_do_writes_nothing_to_the_store(setup: Setup,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    setup.register()
    setup.registry.set_alias("reg", "production", 1)
    manager = setup.manager()
    manager.deploy("reg@production")
    writes: list[object] = []
    monkeypatch.setattr(setup.store, "replace_endpoints", writes.append)

    for _ in range(3):
        manager.update()

    assert writes == [] and setup.errors == []


def test_an_alias_moved_to_an_unservable_version_is_refused_once_and_followed_when_it_moves_on(
        setup: Setup) -> None:
    setup.register(), setup.register(serving={}), setup.register()
    setup.registry.set_alias("reg", "production", 1)
    manager = setup.manager()
    manager.deploy("reg@production")

    setup.registry.set_alias("reg", "production", 2)  # names no predictor
    for _ in range(3):
        manager.update()

    assert manager.endpoint("reg").stable_version == 1
    assert setup.actions() == ["endpoint.deployed", "endpoint.roll_refused"]
    assert len(setup.errors) == 1 and "names no predictor" in setup.errors[0]
    with pytest.raises(FactoryError, match="endpoint 'reg': model 'reg' v2 names no predictor"):
        manager.sync()  # a promote must hear why, though a round refused it first

    setup.registry.set_alias("reg", "production", 3)
    manager.sync()
    assert manager.endpoint("reg").stable_version == 3


def test_a_failing_canary_is_rolled_back_on_requests_counted_since_it_began(setup: Setup) -> None:
    setup.register(), setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    manager.report("reg", "replica-a", {"reg:1": counts(100, errors=50)})  # before the canary: not its fault
    manager.canary("reg", 2, 10.0, set_by="cli:alice")
    assert setup.serve.applied[-1] == ("reg", 1, 2)

    manager.report("reg", "replica-a", {"reg:1": counts(110, errors=50), "reg:2": counts(19, errors=19)})
    manager.update()
    assert manager.endpoint("reg").canary_version == 2  # 19 answers: too few to judge

    manager.report("reg", "replica-a", {"reg:1": counts(120, errors=50), "reg:2": counts(40, errors=4)})
    manager.update()

    endpoint = manager.endpoint("reg")
    assert endpoint.canary_version is None and endpoint.stable_version == 1
    assert endpoint.last_rollback is not None and endpoint.last_rollback.automatic
    assert "4 of 40 requests failed" in endpoint.last_rollback.reason
    assert setup.serve.applied[-1] == ("reg", 1, None)
    assert setup.store.list_endpoints()["reg"]["canary_version"] is None

    manager.canary("reg", 2, 10.0)  # tried again: judged on its new answers only (30, all good)
    manager.report("reg", "replica-a", {"reg:1": counts(130, errors=50), "reg:2": counts(70, errors=4)})
    manager.update()
    assert manager.endpoint("reg").canary_version == 2


def following_production_rolled_to_v2(setup: Setup) -> EndpointManager:
    """A manager whose endpoint 'reg' follows reg@production, which moved from v1 to v2."""
    setup.register(), setup.register()
    setup.registry.set_alias("reg", "production", 1)
    manager = setup.manager()
    manager.deploy("reg@production")
    setup.registry.set_alias("reg", "production", 2)
    manager.update()
    return manager


def test_a_rollback_of_an_alias_follower_moves_the_alias_back_first(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)

    manager.rollback("reg", "cli:ops")

    assert setup.alias_moves == [("reg", "production", 1, "cli:ops")]
    assert manager.endpoint("reg").stable_version == 1
    manager.update()  # the alias agrees: the endpoint stays
    assert manager.endpoint("reg").stable_version == 1


def test_a_rollback_whose_alias_cannot_move_yet_is_served_and_the_move_finished_by_a_round(
        setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    move_alias = manager._aliases.move_alias

    def unreachable(*_: object) -> None:
        raise FactoryError("the factory's 'registry' actor did not answer")

    manager._aliases.move_alias = unreachable  # type: ignore[assignment]
    rolled = manager.rollback("reg", "cli:ops")  # serving the old version matters most in a rollback

    assert rolled.stable_version == 1 and setup.serve.applied[-1] == ("reg", 1, None)
    assert "alias 'production' is not moved back yet" in setup.errors[-1]
    manager.update()  # the registry still does not answer: the endpoint leads its alias, not follows it
    assert manager.endpoint("reg").stable_version == 1
    assert setup.store.model_aliases("reg")["reg"]["production"] == 2

    manager._aliases.move_alias = move_alias  # type: ignore[assignment]
    manager.update()
    assert setup.store.model_aliases("reg")["reg"]["production"] == 1
    assert manager.endpoint("reg").stable_version == 1


def test_after_a_restart_stored_endpoints_are_reapplied_until_serve_takes_them(setup: Setup) -> None:
    setup.register()
    setup.manager().deploy("reg:1")
    setup.serve.applied.clear()
    setup.serve.refuse.add(1)  # Serve is not ready yet after the restart
    restarted = setup.manager()

    restarted.update()
    assert setup.serve.applied == [] and len(setup.errors) == 1

    setup.serve.refuse.clear()
    restarted.update()
    restarted.update()
    assert setup.serve.applied == [("reg", 1, None)]  # once it succeeded, not again


def test_take_down_stops_serving_but_keeps_the_endpoints_and_undeploy_forgets(setup: Setup) -> None:
    setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")

    assert manager.take_down() == ["reg"]
    assert setup.serve.deleted == ["reg"] and "reg" in setup.store.list_endpoints()

    manager.undeploy("reg", "cli:ops")
    assert setup.store.list_endpoints() == {} and setup.actions()[-1] == "endpoint.undeployed"
    with pytest.raises(EndpointNotFoundError, match="no endpoint 'reg' \\(endpoints: none\\)"):
        manager.canary("reg", 1, 5.0)


def deployed_three_versions(setup: Setup) -> EndpointManager:
    """A manager whose endpoint 'reg' was deployed at v1, then v2, then v3 (history [1, 2])."""
    manager = setup.manager()
    for version in (1, 2, 3):
        setup.register()
        manager.deploy(f"reg:{version}")
    return manager


def test_a_rollback_resent_after_a_restart_during_serves_apply_goes_back_one_version(setup: Setup) -> None:
    manager = deployed_three_versions(setup)
    setup.serve.die_in.add("apply")
    with pytest.raises(KeyboardInterrupt):
        manager.rollback("reg", "cli:ops", request_id="req-rollback")
    setup.serve.die_in.clear()

    restarted = setup.manager()  # the client rides out the restart: it sends the same request again
    resent = restarted.rollback("reg", "cli:ops", request_id="req-rollback")

    assert resent.stable_version == 2 and setup.store.list_endpoints()["reg"]["stable_version"] == 2
    assert setup.serve.applied[-1] == ("reg", 2, None)  # Serve runs it before the resend is answered
    assert setup.actions() == ["endpoint.deployed"] * 3 + ["endpoint.rolled_back"]
    assert restarted.rollback("reg", "cli:ops", request_id="req-again").stable_version == 1  # a new call


def test_a_canary_serve_refuses_is_undone_with_its_request_and_the_refusal_audited(setup: Setup) -> None:
    setup.register(), setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    setup.serve.refuse_canaries.add(2)  # the canary's replicas crash

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.canary("reg", 2, 10.0, "cli:alice", request_id="req-canary")

    assert setup.store.list_endpoints()["reg"]["canary_version"] is None
    assert setup.serve.applied[-1] == ("reg", 1, None)  # Serve runs the stable version alone again
    assert setup.store.find_request("req-canary") is None  # a retry acts again
    assert setup.actions() == ["endpoint.deployed", "endpoint.canary", "endpoint.refused"]
    refused = setup.store.list_audit(action_prefix="endpoint.refused")[0]
    assert refused.detail["change"] == "endpoint.canary" and "replicas crashed" in refused.detail["reason"]
    setup.serve.refuse_canaries.clear()
    assert manager.canary("reg", 2, 10.0, request_id="req-canary").canary_version == 2


def test_an_undeploy_cut_by_a_restart_before_serves_delete_is_deleted_from_serve_after_it(
        setup: Setup) -> None:
    setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    setup.serve.die_in.add("delete")
    with pytest.raises(KeyboardInterrupt):
        manager.undeploy("reg", "cli:ops", request_id="req-undeploy")
    setup.serve.die_in.clear()
    assert setup.store.list_endpoints() == {} and setup.serve.running == {"reg"}  # stored, not done

    setup.manager().update()  # the restarted actor's first round, before any resend

    assert setup.serve.running == set() and setup.serve.deleted == ["reg"]
    gone = setup.manager().undeploy("reg", "cli:ops", request_id="req-undeploy")  # the resend
    assert gone.name == "reg" and setup.serve.deleted == ["reg"]  # nothing left to delete
    assert setup.actions() == ["endpoint.deployed", "endpoint.undeployed"]  # acted once


def test_a_refused_rollback_is_undone_in_the_store_before_serve_is_told_to_go_back(setup: Setup) -> None:
    manager = deployed_three_versions(setup)
    setup.serve.refuse.add(2)
    setup.serve.die_in.add("apply")  # the actor dies while Serve goes back to v3

    with pytest.raises(KeyboardInterrupt):
        manager.rollback("reg", "cli:ops", request_id="req-rollback")

    assert setup.store.list_endpoints()["reg"]["stable_version"] == 3
    assert setup.store.find_request("req-rollback") is None
    assert setup.actions() == ["endpoint.deployed"] * 3 + ["endpoint.rolled_back", "endpoint.refused"]


def test_a_resend_whose_change_serve_now_refuses_says_it_took_effect_and_not_to_send_it_again(
        setup: Setup) -> None:
    manager = deployed_three_versions(setup)
    setup.serve.die_in.add("apply")
    with pytest.raises(KeyboardInterrupt):
        manager.rollback("reg", "cli:ops", request_id="req-rollback")
    setup.serve.die_in.clear()
    setup.serve.refuse.add(2)  # after the restart, Serve cannot run v2 after all

    with pytest.raises(FactoryError, match="the rollback took effect, but .*replicas crashed.*do not send it "
                                           "again"):
        setup.manager().rollback("reg", "cli:ops", request_id="req-rollback")
    assert setup.store.list_endpoints()["reg"]["stable_version"] == 2  # as asked; the rounds keep trying


@pytest.mark.parametrize("moved", [False, True], ids=["before-the-move", "after-the-move"])
def test_a_rollback_of_an_alias_follower_cut_by_a_restart_is_finished_not_reversed(
        setup: Setup, moved: bool) -> None:
    following_production_rolled_to_v2(setup)
    crashing = setup.manager()

    def die(model: str, alias: str, version: int, by: str, if_last_change: int | None) -> None:
        if moved:  # the registry moved it; the actor died before it heard so
            setup.alias_moves.append((model, alias, version, by))
            setup.registry.set_alias(model, alias, version, by, if_last_change)
        raise KeyboardInterrupt

    crashing._aliases.move_alias = die  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        crashing.rollback("reg", "cli:ops", request_id="req-rollback")

    restarted = setup.manager()
    restarted.update()  # the first round moves the alias (if need be) rather than follow it back to v2
    resent = restarted.rollback("reg", "cli:ops", request_id="req-rollback")

    assert resent.stable_version == 1 and setup.store.model_aliases("reg")["reg"]["production"] == 1
    assert setup.alias_moves == [("reg", "production", 1, "cli:ops")]  # once
    restarted.update()
    assert restarted.endpoint("reg").stable_version == 1


def a_rollback_cut_before_its_alias_move(setup: Setup) -> None:
    """Production at v2 followed by endpoint `reg`, v3 registered; a rollback stored, its alias move noted
    but not made (the actor died first)."""
    following_production_rolled_to_v2(setup)
    setup.register()  # v3
    crashing = setup.manager()

    def die(*_: object) -> None:
        raise KeyboardInterrupt

    crashing._aliases.move_alias = die  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        crashing.rollback("reg", "cli:ops", request_id="req-rollback")


def test_a_promote_made_before_a_cut_rollbacks_alias_move_is_followed_not_undone(setup: Setup) -> None:
    a_rollback_cut_before_its_alias_move(setup)
    setup.registry.set_alias("reg", "production", 3, "cli:alice")  # `factory promote`, before the round

    setup.manager().update()

    assert setup.store.model_aliases("reg")["reg"]["production"] == 3 and setup.alias_moves == []
    assert setup.manager().endpoint("reg").stable_version == 3


def test_a_promote_away_and_back_before_a_cut_rollbacks_alias_move_is_not_overridden(setup: Setup) -> None:
    a_rollback_cut_before_its_alias_move(setup)
    setup.registry.set_alias("reg", "production", 3, "cli:alice")  # away and back: the alias points
    setup.registry.set_alias("reg", "production", 2, "cli:alice")  # where the rollback's note found it

    setup.manager().update()

    assert setup.store.model_aliases("reg")["reg"]["production"] == 2 and setup.alias_moves == []
    assert setup.manager().endpoint("reg").stable_version == 2


def test_a_refused_rollback_leaves_a_promote_made_while_serve_applied_it(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.serve.refuse.add(1)
    # While Serve tries v1, a user promotes v1 themselves: the alias's last word is theirs.
    setup.serve.while_applying.append(lambda: setup.registry.set_alias("reg", "production", 1, "cli:alice"))

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.rollback("reg", "cli:ops")

    assert setup.store.model_aliases("reg")["reg"]["production"] == 1
    assert setup.alias_moves == [("reg", "production", 1, "cli:ops")]  # the rollback's own, not undone
    assert manager.endpoint("reg").stable_version == 2


def test_serve_not_up_is_no_verdict_on_a_change_which_the_rounds_apply_once_it_is(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.serve.down = True

    with pytest.raises(ServeUnavailableError):
        manager.rollback("reg", "cli:ops", request_id="req-rollback")
    setup.register()  # v3
    setup.registry.set_alias("reg", "production", 3)
    manager.update()  # Serve is still down: the alias's v3 is not taken for refused

    assert manager.endpoint("reg").stable_version == 3
    assert not [action for action in setup.actions() if "refused" in action]  # neither change was
    setup.serve.down = False
    manager.update()
    assert setup.serve.applied[-1] == ("reg", 3, None)
    assert manager.rollback("reg", "cli:ops", request_id="req-rollback").name == "reg"  # a resend: done


def test_a_refused_rollback_whose_alias_move_a_user_overtook_moves_no_alias_back(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.serve.refuse.add(1)
    move_alias = manager._aliases.move_alias

    def promoted_first(*move: Any) -> int:  # a user's promote lands between the note and the move
        manager._aliases.move_alias = move_alias  # type: ignore[assignment]
        setup.registry.set_alias("reg", "production", 1, "cli:alice")
        return move_alias(*move)  # refused: the alias moved since the note

    manager._aliases.move_alias = promoted_first  # type: ignore[assignment]
    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.rollback("reg", "cli:ops")

    assert setup.store.model_aliases("reg")["reg"]["production"] == 1 and setup.alias_moves == []
    assert manager.endpoint("reg").stable_version == 2


def test_a_rollback_whose_write_ahead_fails_leaves_no_alias_move_behind(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = following_production_rolled_to_v2(setup)

    def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(setup.store, "record_request", locked)
    with pytest.raises(sqlite3.OperationalError):
        manager.rollback("reg", "cli:ops", request_id="req-rollback")
    monkeypatch.undo()
    manager.update()  # nothing was stored: no alias to move, nothing to follow

    assert setup.store.model_aliases("reg")["reg"]["production"] == 2 and setup.alias_moves == []
    assert manager.endpoint("reg").stable_version == 2


def test_a_deploy_and_a_canary_judged_while_serve_is_down_are_recorded_and_applied_later(
        setup: Setup) -> None:
    setup.register(), setup.register(), setup.register("other")
    manager = setup.manager()
    manager.deploy("reg:1")
    manager.canary("reg", 2, 10.0, set_by="cli:alice")
    setup.serve.down = True

    with pytest.raises(ServeUnavailableError, match="stored as asked .* do not send the change again"):
        manager.deploy("other:1", request_id="req-deploy")
    manager.report("reg", "replica-a", {"reg:1": counts(40), "reg:2": counts(40, errors=40)})
    manager.update()  # the canary fails: rolled back in the store and audited; Serve is told once up

    assert setup.actions()[-2:] == ["endpoint.deployed", "endpoint.rolled_back"]
    assert manager.deploy("other:1", request_id="req-deploy").name == "other"  # a resend: done already
    assert setup.actions().count("endpoint.deployed") == 2
    setup.serve.down = False
    manager.update()
    assert {("other", 1, None), ("reg", 1, None)} <= set(setup.serve.applied[-2:])


def test_an_alias_followed_while_serve_fails_unexpectedly_is_audited_and_applied_later(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.register()  # v3
    setup.serve.down = RuntimeError("the Serve controller did not answer")
    setup.registry.set_alias("reg", "production", 3)

    manager.update()

    assert "Serve did not answer (RuntimeError" in setup.errors[-1] and "stored as asked" in setup.errors[-1]
    assert setup.actions()[-1] == "endpoint.rolled" and manager.endpoint("reg").stable_version == 3
    setup.serve.down = False
    manager.update()
    assert setup.serve.applied[-1] == ("reg", 3, None)


def test_a_rollback_serve_refuses_moves_the_followed_alias_back(setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.serve.refuse.add(1)

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.rollback("reg", "cli:ops")

    assert setup.store.model_aliases("reg")["reg"]["production"] == 2
    assert [move[2] for move in setup.alias_moves] == [1, 2]
    assert manager.endpoint("reg").stable_version == 2 and setup.serve.applied[-1] == ("reg", 2, None)


def test_a_refused_rollback_puts_the_alias_back_where_it_pointed_not_at_the_endpoints_version(
        setup: Setup) -> None:
    manager = following_production_rolled_to_v2(setup)
    setup.register()  # v3, which Serve cannot run
    setup.serve.refuse.update({1, 3})
    setup.registry.set_alias("reg", "production", 3, "cli:alice")
    manager.update()  # refused: the endpoint stays at v2, the alias at v3

    with pytest.raises(FactoryError, match="replicas crashed"):
        manager.rollback("reg", "cli:ops")

    assert manager.endpoint("reg").stable_version == 2
    assert setup.store.model_aliases("reg")["reg"]["production"] == 3  # as the user left it
    assert [move[2] for move in setup.alias_moves] == [1, 3]


def test_an_undeploy_whose_serve_delete_fails_is_done_and_deleted_by_a_later_round_or_resend(
        setup: Setup) -> None:
    setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    setup.serve.fail_deletes = True

    gone = manager.undeploy("reg", "cli:ops", request_id="req-undeploy")
    assert gone.name == "reg" and "Serve's delete failed" in setup.errors[-1]
    assert setup.store.list_endpoints() == {} and setup.serve.running == {"reg"}

    again = manager.undeploy("reg", "cli:ops", request_id="req-undeploy")  # a resend while it still fails
    assert again.name == "reg" and setup.serve.running == {"reg"}
    setup.serve.fail_deletes = False
    manager.undeploy("reg", "cli:ops", request_id="req-undeploy")  # the resend finishes it
    assert setup.serve.running == set() and setup.actions() == ["endpoint.deployed", "endpoint.undeployed"]


def test_a_restart_deletes_only_the_apps_the_factory_undeployed(setup: Setup) -> None:
    setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    setup.serve.running.add("exported")  # `serve deploy` of an exported config: not the factory's
    setup.serve.die_in.add("delete")
    with pytest.raises(KeyboardInterrupt):
        manager.undeploy("reg", request_id="req-undeploy")
    setup.serve.die_in.clear()

    setup.manager().deploy("reg:1")  # deployed again before the restarted actor's first round
    setup.manager().update()

    assert setup.serve.running == {"reg", "exported"} and setup.serve.deleted == []


def test_a_view_shows_the_request_rate_over_the_window_on_the_monotonic_clock(setup: Setup) -> None:
    setup.register()
    manager = setup.manager()
    manager.deploy("reg:1")
    manager.update()  # the window's first snapshot

    setup.clocks.monotonic_s += 10.0
    manager.report("reg", "replica-a", {"reg:1": counts(50, errors=1)})
    manager.report("reg", "replica-b", {"reg:1": counts(50)})
    view = manager.views()[0]

    assert view["requests"] == 100 and view["rate_per_s"] == pytest.approx(10.0)
    assert view["error_rate"] == pytest.approx(0.01) and view["window_s"] == 10.0
    assert view["serve"]["status"] == "RUNNING" and view["url"] == "http://127.0.0.1:8000/models/reg"
