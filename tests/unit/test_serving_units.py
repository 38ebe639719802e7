"""Serving without Ray: request statistics, endpoint rules, predictors, the model server's pure parts,
the job spec's `predictor`, the store's `serving` column and the serving config.

Importing `deployments.model_server` imports `ray.serve`, which starts no cluster.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from deployments.model_server import Routing, ServerArgs, _first_problem
from factory.config import ServingConfig, load_config
from factory.errors import ConfigError, FactoryError
from factory.examples.faulty import INJECTED, FailingPredictor
from factory.examples.regression import RegressionInput, RegressionPredictor, build_model
from factory.jobs import CommandJobSpec, JobSpecError, TrainJobSpec, TuneJobSpec, parse_job_spec
from factory.registry.catalog import ModelRegistry
from factory.registry.refs import ModelRef
from factory.registry.storage import ArtifactStorage
from factory.serving.endpoints import (
    HISTORY_KEPT,
    Endpoint,
    check_percent,
    check_route,
    default_route,
    deployed,
    judge_canary,
)
from factory.serving.predictor import check_import_path, input_schema, load_predictor_class
from factory.serving.stats import (
    LATENCY_BOUNDS_MS,
    EndpointTotals,
    combined,
    empty_counts,
    quantile_ms,
    record,
    subtract,
    summary,
)
from factory.store import SQLiteStore
from factory.store.migrations import LATEST_VERSION, MIGRATIONS

REGRESSION = "factory.examples.regression:RegressionPredictor"


def counts_of(*latencies_ms: float, status: int = 200) -> dict[str, Any]:
    """Counts of requests that took `latencies_ms`, all answered with `status`."""
    counts = empty_counts()
    for latency in latencies_ms:
        record(counts, latency, status)
    return counts


def many(n: int, latency_ms: float, errors: int = 0, rejected: int = 0) -> dict[str, Any]:
    """Counts of `n` requests of `latency_ms` each, `errors` of them 500s and `rejected` 422s."""
    counts = empty_counts()
    for index in range(n):
        status = 500 if index < errors else 422 if index < errors + rejected else 200
        record(counts, latency_ms, status)
    return counts


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, f"an error must be one line: {message!r}"
    return message


# --- stats: counting and quantiles -----------------------------------------------------------------


def test_record_counts_5xx_as_errors_and_4xx_as_rejected() -> None:
    counts = empty_counts()
    record(counts, 2.0, 200)
    record(counts, 4.0, 404)
    record(counts, 6.0, 503)
    record(counts, 6.0, 500)

    assert (counts["requests"], counts["errors"], counts["rejected"]) == (4, 2, 1)
    assert counts["latency_ms_sum"] == pytest.approx(18.0)
    assert sum(counts["buckets"]) == 4


def test_a_latency_on_a_bound_counts_in_that_bound_bucket() -> None:
    # buckets[i] counts answers that took at most LATENCY_BOUNDS_MS[i]
    counts = counts_of(5.0)
    assert counts["buckets"][LATENCY_BOUNDS_MS.index(5)] == 1
    counts = counts_of(5.01)
    assert counts["buckets"][LATENCY_BOUNDS_MS.index(7.5)] == 1


def test_quantile_of_equal_latencies_lies_in_their_bucket() -> None:
    buckets = counts_of(*[4.0] * 100)["buckets"]

    for q in (0.5, 0.9, 0.99):
        value = quantile_ms(buckets, q)
        assert value is not None and 3 < value <= 5, (q, value)


def test_quantiles_of_a_mixture_find_each_mode() -> None:
    buckets = counts_of(*([1.0] * 90 + [90.0] * 10))["buckets"]

    p50, p99 = quantile_ms(buckets, 0.5), quantile_ms(buckets, 0.99)
    assert p50 is not None and 0.5 < p50 <= 1
    assert p99 is not None and 75 < p99 <= 100


def test_quantile_of_nothing_is_none() -> None:
    assert quantile_ms(empty_counts()["buckets"], 0.5) is None
    assert summary(empty_counts())["p99_ms"] is None


def test_quantile_beyond_the_last_bound_is_the_last_bound() -> None:
    buckets = counts_of(40_000.0, 90_000.0)["buckets"]

    assert buckets[-1] == 2
    assert quantile_ms(buckets, 0.5) == LATENCY_BOUNDS_MS[-1]
    assert quantile_ms(buckets, 0.99) == LATENCY_BOUNDS_MS[-1]


def test_summary_gives_error_rate_and_rate_over_the_window() -> None:
    counts = many(40, 4.0, errors=4, rejected=6)

    result = summary(counts, seconds=20.0)
    assert (result["requests"], result["errors"], result["rejected"]) == (40, 4, 6)
    assert result["error_rate"] == pytest.approx(0.1)
    assert result["rate_per_s"] == pytest.approx(2.0)
    assert 3 < result["p50_ms"] <= 5
    assert summary(counts)["rate_per_s"] is None
    assert summary(empty_counts(), seconds=10.0)["error_rate"] == 0.0


def test_subtract_and_combined_are_counter_by_counter() -> None:
    older = many(10, 2.0, errors=1)
    newer = many(25, 2.0, errors=3)

    delta = subtract(newer, older)
    assert (delta["requests"], delta["errors"], sum(delta["buckets"])) == (15, 2, 15)
    assert delta["latency_ms_sum"] == pytest.approx(30.0)

    both = combined([many(3, 1.0, errors=1), many(5, 40.0, rejected=2)])
    assert (both["requests"], both["errors"], both["rejected"]) == (8, 1, 2)
    assert sum(both["buckets"]) == 8


def test_subtract_from_nothing_copies_without_sharing_buckets() -> None:
    counts = many(3, 2.0)
    copy = subtract(counts, None)
    record(counts, 2.0, 200)

    assert copy["requests"] == 3 and sum(copy["buckets"]) == 3


# --- stats: totals over replicas, marks and windows -------------------------------------------------


def test_two_replicas_reports_sum() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(10, 4.0, errors=1)})
    totals.add_report("r2", {"m:1": many(7, 4.0), "m:2": many(3, 40.0, errors=3)})

    assert totals.totals["m:1"]["requests"] == 17 and totals.totals["m:1"]["errors"] == 1
    assert totals.totals["m:2"]["requests"] == 3 and totals.totals["m:2"]["errors"] == 3


def test_a_repeated_report_adds_nothing_and_a_grown_one_adds_the_difference() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(10, 4.0)})
    totals.add_report("r1", {"m:1": many(10, 4.0)})
    assert totals.totals["m:1"]["requests"] == 10

    totals.add_report("r1", {"m:1": many(14, 4.0, errors=2)})
    assert totals.totals["m:1"]["requests"] == 14
    assert totals.totals["m:1"]["errors"] == 2
    assert sum(totals.totals["m:1"]["buckets"]) == 14


def test_a_restarted_replica_adds_its_new_counts_whole() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(10, 4.0)})
    totals.add_report("r1", {"m:1": many(3, 4.0, errors=1)})  # counters went down: it restarted

    assert totals.totals["m:1"]["requests"] == 13
    assert totals.totals["m:1"]["errors"] == 1
    assert sum(totals.totals["m:1"]["buckets"]) == 13


def test_silent_replicas_are_forgotten_but_their_counts_stay_in_the_totals() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(10, 4.0)}, now_s=0.0)
    totals.add_report("r2", {"m:1": many(5, 4.0)}, now_s=100.0)
    totals.forget_silent(now_s=150.0, silence_s=60.0)  # r1 silent for 150 s: gone; r2 for 50 s: kept

    assert totals.totals["m:1"]["requests"] == 15
    totals.add_report("r2", {"m:1": many(5, 4.0)}, now_s=151.0)  # r2 is still known: nothing new
    assert totals.totals["m:1"]["requests"] == 15
    totals.add_report("r1", {"m:1": many(2, 4.0)}, now_s=152.0)  # a forgotten id counts from scratch
    assert totals.totals["m:1"]["requests"] == 17


def test_since_a_mark_counts_only_what_came_after() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(50, 4.0, errors=5)})
    mark = totals.mark()
    totals.add_report("r1", {"m:1": many(60, 4.0, errors=5), "m:2": many(4, 40.0, errors=2)})

    stable, canary = totals.since(mark, "m:1"), totals.since(mark, "m:2")
    assert (stable["requests"], stable["errors"]) == (10, 0)
    assert (canary["requests"], canary["errors"]) == (4, 2)
    assert totals.since(mark, "m:9")["requests"] == 0
    # the mark is a copy: later reports do not move it
    assert mark["m:1"]["requests"] == 50


def test_window_covers_the_last_window_s_of_snapshots() -> None:
    totals = EndpointTotals(window_s=60)
    assert totals.window(0.0) == (0.0, {})

    reported = 10
    totals.add_report("r1", {"m:1": many(reported, 4.0)})
    for now in (0.0, 30.0, 60.0, 90.0):
        totals.snapshot(now)
        reported += 10
        totals.add_report("r1", {"m:1": many(reported, 4.0)})

    seconds, counts = totals.window(90.0)
    # 50 requests in all; snapshots 30, 60, 90 remain: the window starts at 30 s, when 20 were counted
    assert reported == 50
    assert seconds == pytest.approx(60.0)
    assert counts["m:1"]["requests"] == 30
    assert summary(counts["m:1"], seconds)["rate_per_s"] == pytest.approx(0.5)


def test_window_before_a_full_window_starts_at_the_first_snapshot() -> None:
    totals = EndpointTotals(window_s=60)
    totals.add_report("r1", {"m:1": many(5, 4.0)})
    totals.snapshot(100.0)
    totals.add_report("r1", {"m:1": many(12, 4.0)})

    seconds, counts = totals.window(110.0)
    assert seconds == pytest.approx(10.0)
    assert set(counts) == {"m:1"} and counts["m:1"]["requests"] == 7


# --- endpoints ---------------------------------------------------------------------------------------


def endpoint(**fields: Any) -> Endpoint:
    values: dict[str, Any] = {"name": "reg", "model": "reg", "route": "/models/reg", "stable_version": 3,
                              "created_s": 100.0, "updated_s": 100.0}
    values.update(fields)
    return Endpoint(**values)


def test_ref_reads_as_the_user_wrote_it() -> None:
    assert endpoint(follows="production").ref == "reg@production"
    assert endpoint().ref == "reg:3"


def test_traffic_split_sums_to_100() -> None:
    assert endpoint().traffic() == {"reg:3": 100.0}
    split = endpoint(canary_version=5, canary_percent=30.0).traffic()
    assert split == {"reg:3": 70.0, "reg:5": 30.0}
    assert sum(endpoint(canary_version=5, canary_percent=12.5).traffic().values()) == pytest.approx(100.0)


def test_with_stable_pushes_the_old_stable_onto_the_history() -> None:
    before = endpoint(history=[1, 2])
    after = before.with_stable(4, now_s=200.0)

    assert after.stable_version == 4
    assert after.history == [1, 2, 3]
    assert after.updated_s == 200.0
    assert before.stable_version == 3 and before.history == [1, 2]  # a copy, not a change
    assert before.with_stable(3, now_s=300.0) == before


def test_with_stable_to_the_canary_completes_the_canary() -> None:
    before = endpoint(canary_version=5, canary_percent=20.0, canary_since_s=150.0)
    after = before.with_stable(5, now_s=200.0)

    assert after.stable_version == 5 and after.history == [3]
    assert (after.canary_version, after.canary_percent, after.canary_since_s) == (None, 0.0, None)
    assert after.traffic() == {"reg:5": 100.0}


def test_with_stable_to_another_version_keeps_the_canary() -> None:
    before = endpoint(canary_version=5, canary_percent=20.0, canary_since_s=150.0)
    after = before.with_stable(4, now_s=200.0)

    assert after.stable_version == 4
    assert (after.canary_version, after.canary_percent, after.canary_since_s) == (5, 20.0, 150.0)
    assert after.traffic() == {"reg:4": 80.0, "reg:5": 20.0}


def test_history_keeps_only_the_last_versions() -> None:
    current = endpoint(stable_version=1)
    for version in range(2, HISTORY_KEPT + 6):
        current = current.with_stable(version, now_s=float(version))

    assert len(current.history) == HISTORY_KEPT
    assert current.history[-1] == HISTORY_KEPT + 4
    assert current.history[0] == 5


@pytest.mark.parametrize("automatic", [True, False])
def test_without_canary_records_the_rollback(automatic: bool) -> None:
    before = endpoint(canary_version=5, canary_percent=20.0, canary_since_s=150.0, history=[1, 2])
    after = before.without_canary("v5: too many errors", now_s=250.0, automatic=automatic)

    assert (after.canary_version, after.canary_percent, after.canary_since_s) == (None, 0.0, None)
    assert after.stable_version == 3 and after.history == [1, 2]
    assert after.traffic() == {"reg:3": 100.0}
    assert after.last_rollback is not None
    assert after.last_rollback.version == 5
    assert after.last_rollback.reason == "v5: too many errors"
    assert after.last_rollback.time_s == 250.0
    assert after.last_rollback.automatic is automatic
    assert after.updated_s == 250.0
    # persisted as JSON and read back, the rollback survives
    assert Endpoint.model_validate_json(after.model_dump_json()) == after


def test_a_first_deploy_listens_on_its_default_route_and_a_redeploy_keeps_route_and_replicas() -> None:
    first = deployed(None, [], model="reg", follows="production", version=3, route=None, replicas=2,
                     by="cli:alice", now_s=100.0)
    assert (first.route, first.follows, first.stable_version, first.replicas) == ("/models/reg", "production",
                                                                                  3, 2)
    again = deployed(first, [first], model="reg", follows=None, version=4, route=None, replicas=None,
                     by="cli:bob", now_s=200.0)
    assert (again.route, again.follows, again.stable_version, again.history, again.replicas) == (
        "/models/reg", None, 4, [3], 2)
    assert (again.created_s, again.updated_s, again.deployed_by) == (100.0, 200.0, "cli:bob")


def test_a_deploy_on_a_route_another_endpoint_has_is_refused_naming_it() -> None:
    other = endpoint(name="vision", model="vision", route="/models/shared")
    with pytest.raises(FactoryError, match=r"^route /models/shared is taken by endpoint 'vision'; "):
        deployed(None, [other], model="reg", follows=None, version=1, route="/models/shared/",
                 replicas=None, by="", now_s=1.0)


def test_a_canary_is_another_version_with_its_share_from_now() -> None:
    canary = endpoint().with_canary(4, 10.0, 150.0)
    assert (canary.canary_version, canary.canary_percent, canary.canary_since_s) == (4, 10.0, 150.0)
    assert canary.traffic() == {"reg:3": 90.0, "reg:4": 10.0}
    with pytest.raises(FactoryError, match=r"^endpoint 'reg' already serves v3; a canary is another"):
        endpoint().with_canary(3, 10.0, 150.0)
    with pytest.raises(FactoryError, match="out of range"):
        endpoint().with_canary(4, 100.0, 150.0)


def test_a_rollback_by_hand_takes_the_canary_out_else_returns_to_the_previous_version() -> None:
    out = endpoint().with_canary(4, 10.0, 150.0).rolled_back("cli:alice", 160.0)
    assert out.canary_version is None and out.stable_version == 3
    assert out.last_rollback is not None and (out.last_rollback.version, out.last_rollback.reason) == (
        4, "rolled back by cli:alice")
    back = endpoint(stable_version=5, history=[3, 4]).rolled_back("", 170.0)
    assert (back.stable_version, back.history) == (4, [3])  # twice goes two versions back
    assert back.last_rollback is not None and back.last_rollback.reason == "rolled back to v4 by a user"
    with pytest.raises(FactoryError, match=r"^endpoint 'reg' has served only v3: there is no previous"):
        endpoint().rolled_back("cli:alice", 180.0)


def test_default_route_is_under_models() -> None:
    assert default_route("reg") == "/models/reg"
    assert check_route(default_route("reg")) == "/models/reg"


def test_check_route_drops_a_trailing_slash() -> None:
    assert check_route("/models/reg/") == "/models/reg"
    assert check_route("/a/b") == "/a/b"


@pytest.mark.parametrize("route", ["models/reg", "/", "/a b", "/a?b", "/a#b", "/a/{x}"])
def test_check_route_refuses_bad_routes_in_one_line_naming_them(route: str) -> None:
    with pytest.raises(FactoryError) as info:
        check_route(route)
    message = one_line(info.value)
    assert repr(route) in message
    assert "/models/NAME" in message


@pytest.mark.parametrize("percent", [0, 100, -5, 150.5, float("nan")])
def test_check_percent_refuses_shares_outside_0_100_naming_them(percent: float) -> None:
    with pytest.raises(FactoryError) as info:
        check_percent(percent)
    message = one_line(info.value)
    assert f"--percent {percent:g}" in message
    assert "between 0 and 100" in message


def test_check_percent_returns_a_good_share() -> None:
    assert check_percent(0.5) == 0.5
    assert check_percent(99.5) == 99.5


# --- judging a canary --------------------------------------------------------------------------------

CONFIG = ServingConfig(canary_min_requests=20, canary_max_error_rate=0.05, canary_max_latency_ratio=3.0)


def test_nothing_is_judged_before_canary_min_requests() -> None:
    assert judge_canary(many(19, 4000.0, errors=19), many(100, 4.0), CONFIG) is None


def test_an_error_rate_above_the_limit_rolls_back_naming_the_counts() -> None:
    reason = judge_canary(many(20, 4.0, errors=2), many(100, 4.0), CONFIG)

    assert reason is not None
    assert "2 of 20 requests failed" in reason
    assert "10%" in reason and "5%" in reason


def test_an_error_rate_at_the_limit_is_kept() -> None:
    assert judge_canary(many(20, 4.0, errors=1), many(100, 4.0), CONFIG) is None


def test_invalid_requests_both_versions_refuse_are_not_the_canarys_fault() -> None:
    # Clients sending bad bodies: the stable version refuses as many; nothing against the canary.
    assert judge_canary(many(20, 4.0, rejected=4), many(100, 4.0, rejected=20), CONFIG) is None
    # Too few stable answers to compare with: refusals alone are not judged.
    assert judge_canary(many(20, 4.0, rejected=20), many(5, 4.0), CONFIG) is None


def test_a_canary_refusing_what_the_stable_version_accepts_is_rolled_back() -> None:
    reason = judge_canary(many(20, 4.0, rejected=20), many(100, 4.0), CONFIG)
    assert reason is not None and "refused 100% of requests as invalid" in reason and "0%" in reason


def test_a_slow_canary_rolls_back_against_a_busy_stable_version() -> None:
    reason = judge_canary(many(100, 40.0), many(100, 4.0), CONFIG)

    assert reason is not None
    assert "p99 latency" in reason and "3 x" in reason


def test_latency_is_not_judged_without_enough_stable_answers() -> None:
    assert judge_canary(many(150, 40.0), many(99, 4.0), CONFIG) is None


def test_latency_is_not_judged_on_too_few_canary_answers_for_a_p99() -> None:
    # 99 answers: their p99 is their slowest one; a single slow request must not decide.
    assert judge_canary(many(99, 40.0), many(500, 4.0), CONFIG) is None


def test_a_canary_somewhat_slower_than_the_ratio_allows_is_kept() -> None:
    assert judge_canary(many(150, 8.0), many(150, 4.0), CONFIG) is None


def test_a_healthy_canary_is_kept() -> None:
    assert judge_canary(many(200, 4.0, errors=2), many(500, 4.0, errors=5), CONFIG) is None


# --- predictors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["bad path", "module", "a:b:c", "m:1C", ":C", "m:", ".m:C", ""])
def test_check_import_path_refuses_what_is_not_module_colon_class(text: str) -> None:
    with pytest.raises(FactoryError) as info:
        check_import_path(text)
    message = one_line(info.value)
    assert repr(text) in message
    assert "module.path:ClassName" in message


def test_check_import_path_accepts_dotted_modules() -> None:
    assert check_import_path(REGRESSION) == REGRESSION
    assert check_import_path("_m:_C") == "_m:_C"


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path to write predictor modules into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("path", "expected"), [
    ("not a path", "is not an import path"),
    ("factory.no_such_module_zz:C", "no module named 'factory.no_such_module_zz'"),
    ("no_such_top_module_zz:C", "no module named 'no_such_top_module_zz'"),
    ("factory.examples.regression:NoSuchClass", "has no attribute 'NoSuchClass'"),
    ("factory.examples.regression:RegressionInput", "must declare input_schema"),
    ("factory.examples.regression:build_model", "must declare input_schema"),
])
def test_loading_a_bad_predictor_is_one_line_naming_it(path: str, expected: str) -> None:
    with pytest.raises(FactoryError) as info:
        load_predictor_class(path)
    message = one_line(info.value)
    assert repr(path) in message
    assert expected in message


def test_a_predictor_module_that_fails_as_it_loads_is_one_line_naming_it(plugins: Path) -> None:
    module = plugins / "serving_units_explodes_zz.py"
    module.write_text('raise RuntimeError("boom at import\\nsecond line")\n')
    with pytest.raises(FactoryError) as info:
        load_predictor_class("serving_units_explodes_zz:C")
    message = one_line(info.value)
    assert "'serving_units_explodes_zz:C'" in message and "RuntimeError: boom at import" in message


def test_a_predictor_without_predict_or_with_a_non_model_schema_is_refused(plugins: Path) -> None:
    (plugins / "serving_units_plugin_zz.py").write_text(
        "from pydantic import BaseModel\n"
        "class In(BaseModel):\n"
        "    a: int\n"
        "class NoPredict:\n"
        "    input_schema = In\n"
        "class DictSchema:\n"
        "    input_schema = {'a': int}\n"
        "    def predict(self, inputs):\n"
        "        return inputs\n"
        "class Good:\n"
        "    input_schema = In\n"
        "    def __init__(self, artifact, device):\n"
        "        self.offset = artifact\n"
        "    def predict(self, inputs):\n"
        "        return [item.a + self.offset for item in inputs]\n")

    with pytest.raises(FactoryError) as info:
        load_predictor_class("serving_units_plugin_zz:NoPredict")
    assert "has no predict(self, inputs) method" in one_line(info.value)
    with pytest.raises(FactoryError) as info:
        load_predictor_class("serving_units_plugin_zz:DictSchema")
    assert "must declare input_schema" in one_line(info.value)

    cls = load_predictor_class("serving_units_plugin_zz:Good")
    schema = input_schema(cls)
    assert cls(10, "cpu").predict([schema(a=1), schema(a=2)]) == [11, 12]


def test_the_regression_predictor_loads_and_declares_its_schema() -> None:
    cls = load_predictor_class(REGRESSION)

    assert cls is RegressionPredictor
    assert input_schema(cls) is RegressionInput
    assert load_predictor_class("factory.examples.faulty:FailingPredictor") is FailingPredictor


def test_the_regression_predictor_answers_once_per_input_in_order() -> None:
    torch.manual_seed(0)
    model = build_model(8)
    predictor = RegressionPredictor(model.state_dict(), "cpu")
    points = [(0.0, 0.0), (1.0, -1.0), (-2.5, 1.2), (3.0, 0.5), (0.1, 0.2)]
    inputs = [RegressionInput(x1=x1, x2=x2) for x1, x2 in points]

    answers = predictor.predict(inputs)
    with torch.inference_mode():
        expected = model(torch.tensor(points, dtype=torch.float32))[:, 0].tolist()

    assert len(answers) == len(inputs)
    assert [answer["y"] for answer in answers] == pytest.approx(expected, abs=1e-6)
    assert len({answer["y"] for answer in answers}) == len(points)  # distinct: the order is checkable
    reversed_ys = [answer["y"] for answer in predictor.predict(inputs[::-1])]
    assert reversed_ys == pytest.approx([answer["y"] for answer in answers][::-1], abs=1e-6)
    json.dumps(answers)  # JSON-able


def test_the_regression_predictor_reads_a_checkpoint_of_any_width() -> None:
    model = build_model(16)
    predictor = RegressionPredictor({"model": model.state_dict(), "step": 3}, "cpu")
    with torch.inference_mode():
        expected = model(torch.tensor([[0.5, -0.5]]))[0, 0].item()

    assert predictor.predict([RegressionInput(x1=0.5, x2=-0.5)]) == [{"y": pytest.approx(expected, abs=1e-6)}]


def test_the_regression_schema_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(ValidationError):
        RegressionInput.model_validate({"x1": 1.0, "x2": 2.0, "x3": 3.0})
    with pytest.raises(ValidationError):
        RegressionInput.model_validate({"x1": 1.0})


def test_the_failing_predictor_loads_then_raises_in_predict() -> None:
    predictor = FailingPredictor(build_model(8).state_dict(), "cpu")

    with pytest.raises(RuntimeError) as info:
        predictor.predict([RegressionInput(x1=0.0, x2=0.0)])
    assert str(info.value) == INJECTED


# --- the model server's pure parts -------------------------------------------------------------------


def test_routing_sends_the_canary_its_share() -> None:
    random.seed(20240601)
    routing = Routing(stable="reg:3", canary="reg:5", canary_percent=30.0)

    chosen = [routing.choose() for _ in range(20_000)]
    assert set(chosen) == {"reg:3", "reg:5"}
    assert 0.28 <= chosen.count("reg:5") / len(chosen) <= 0.32


def test_routing_without_a_canary_always_chooses_the_stable_version() -> None:
    random.seed(7)
    no_canary = Routing(stable="reg:3", canary=None, canary_percent=50.0)
    no_share = Routing(stable="reg:3", canary="reg:5", canary_percent=0.0)
    assert {no_canary.choose() for _ in range(2000)} == {"reg:3"}
    assert {no_share.choose() for _ in range(2000)} == {"reg:3"}
    assert Routing().choose() is None


def test_server_args_give_settings_and_routing() -> None:
    args = ServerArgs(endpoint="reg", model="reg@production", canary="reg:5", canary_percent=10,
                      replica_gpus=1, max_batch_size=4, request_timeout_s=5)

    assert args.routing() == {"stable": "reg@production", "canary": "reg:5", "canary_percent": 10.0}
    settings = args.settings()
    assert settings["endpoint"] == "reg" and settings["gpus"] == 1.0
    assert settings["max_batch_size"] == 4 and settings["request_timeout_s"] == 5.0
    # routing is not part of what a replica is built with: changing it does not restart replicas
    assert "canary" not in settings and "model" not in settings
    assert ServerArgs(endpoint="reg", model="reg:3").routing() == {"stable": "reg:3", "canary": None,
                                                                 "canary_percent": 0.0}


def test_server_args_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError) as info:
        ServerArgs.model_validate({"endpoint": "reg", "model": "reg:3", "replicass": 2})
    assert "replicass" in str(info.value)


@pytest.mark.parametrize("fields", [{"canary_percent": 100.5}, {"canary_percent": -1},
                                    {"replicas": 0}, {"max_batch_size": 0}])
def test_server_args_refuse_out_of_range_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        ServerArgs.model_validate({"endpoint": "reg", "model": "reg:3", **fields})
    assert next(iter(fields)) in str(info.value)


def test_first_problem_names_the_field_and_counts_the_rest() -> None:
    with pytest.raises(ValidationError) as info:
        RegressionInput.model_validate({"x1": "abc"})
    message = _first_problem(info.value)
    assert message.startswith("field 'x1': ")
    assert "number" in message
    assert message.endswith("(and 1 more)")

    with pytest.raises(ValidationError) as info:
        RegressionInput.model_validate({"x1": 1.0, "x2": 2.0, "x3": 3.0})
    assert _first_problem(info.value) == "field 'x3': Extra inputs are not permitted"

    with pytest.raises(ValidationError) as info:
        RegressionInput.model_validate([1.0, 2.0])
    assert _first_problem(info.value).startswith("field '(body)': ")


# --- job specs: predictor ----------------------------------------------------------------------------


def spec_data(kind: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "job", "kind": kind, "estimated_duration_s": 60}
    if kind in ("train", "tune"):
        data["train_loop"] = "mypkg.train:loop"
    if kind == "tune":
        data["tune"] = {"search_space": {"lr": {"uniform": [0.1, 0.2]}}, "num_samples": 2,
                        "metric": "loss", "mode": "min"}
    if kind == "command":
        data["entrypoint"] = "echo hi"
    data.update(fields)
    return data


@pytest.mark.parametrize(("kind", "cls"), [("train", TrainJobSpec), ("tune", TuneJobSpec)])
def test_train_and_tune_jobs_take_a_predictor(kind: str, cls: type) -> None:
    spec = parse_job_spec(spec_data(kind, predictor=REGRESSION), "jobs/x.yaml")

    assert isinstance(spec, cls)
    assert spec.predictor == REGRESSION
    assert parse_job_spec(spec_data(kind), "jobs/x.yaml").predictor is None


@pytest.mark.parametrize("value", ["trainer", "a:b:c", "pkg.mod:1Class"])
def test_a_predictor_that_is_not_an_import_path_is_refused(value: str) -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(spec_data("train", predictor=value), "jobs/x.yaml")
    message = one_line(info.value)
    assert isinstance(info.value, ConfigError)
    assert "jobs/x.yaml" in message
    assert "field 'predictor'" in message
    assert "module.path:ClassName" in message
    assert repr(value) in message


def test_a_command_job_refuses_a_predictor() -> None:
    assert isinstance(parse_job_spec(spec_data("command"), "jobs/x.yaml"), CommandJobSpec)
    with pytest.raises(JobSpecError) as info:
        parse_job_spec(spec_data("command", predictor=REGRESSION), "jobs/x.yaml")
    message = one_line(info.value)
    assert "field 'predictor'" in message
    assert "command job" in message


# --- the store: serving of a model version -----------------------------------------------------------


def registry_at(tmp_path: Path, store: SQLiteStore) -> ModelRegistry:
    clock = iter(float(t) for t in range(1_700_000_000, 1_800_000_000))
    return ModelRegistry(store, ArtifactStorage(str(tmp_path / "artifacts")), lambda: next(clock))


def a_model_dir(root: Path, content: str = "weights") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_text(content)
    return root


def test_a_version_committed_with_serving_reads_back_with_it(tmp_path: Path) -> None:
    db_path = tmp_path / "factory.db"
    store = SQLiteStore(db_path)
    registry = registry_at(tmp_path, store)
    served = registry.commit(registry.storage.stage(a_model_dir(tmp_path / "a"), "reg"), "reg", "directory",
                             serving={"predictor": "m:C"})
    plain = registry.commit(registry.storage.stage(a_model_dir(tmp_path / "b", "2"), "reg"), "reg",
                            "directory")
    assert served.serving == {"predictor": "m:C"}
    assert registry.card(ModelRef("reg", version=1))["serving"] == {"predictor": "m:C"}
    store.close()

    reopened = SQLiteStore(db_path)
    try:
        first = reopened.get_model_version("reg", served.version)
        second = reopened.get_model_version("reg", plain.version)
        assert first is not None and first.serving == {"predictor": "m:C"}
        assert second is not None and second.serving == {}
        assert [row.serving for row in reopened.list_model_versions("reg")] == [{"predictor": "m:C"}, {}]
    finally:
        reopened.close()


def test_a_store_at_schema_3_upgrades_and_its_versions_serve_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "factory.db"
    old = SQLiteStore(db_path, migrations=MIGRATIONS[:3])
    assert old.schema_version() == 3
    old.close()
    connection = sqlite3.connect(db_path, isolation_level=None)
    try:
        connection.execute(
            "INSERT INTO model_versions (name, version, kind, storage_uri, artifact_key, files_json, digest, "
            "size_bytes, description, tags_json, lineage_json, registered_s, registered_by) "
            "VALUES ('old', 1, 'directory', 'file:///x', 'old/1', '{}', 'abc', 3, 'from v3', '{}', '{}', "
            "1700000000.0, 'cli:test')")
    finally:
        connection.close()

    upgraded = SQLiteStore(db_path)
    try:
        assert upgraded.schema_version() == LATEST_VERSION >= 4
        row = upgraded.get_model_version("old", 1)
        assert row is not None
        assert row.serving == {}
        assert (row.description, row.digest, row.registered_by) == ("from v3", "abc", "cli:test")
        registry = registry_at(tmp_path, upgraded)
        new = registry.commit(registry.storage.stage(a_model_dir(tmp_path / "n"), "old"), "old", "directory",
                              serving={"predictor": REGRESSION})
        assert new.version == 2
        again = upgraded.get_model_version("old", 2)
        assert again is not None and again.serving == {"predictor": REGRESSION}
    finally:
        upgraded.close()


# --- config -------------------------------------------------------------------------------------------


def test_serving_config_refuses_more_min_than_max_replicas_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_text("serving:\n  min_replicas: 3\n  max_replicas: 2\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, cwd=tmp_path)
    message = one_line(info.value)
    assert "factory.yaml" in message
    assert "serving" in message
    assert "min_replicas (3) exceeds max_replicas (2)" in message


def test_serving_config_takes_equal_replica_bounds_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_text("serving:\n  min_replicas: 2\n  max_replicas: 2\n")
    assert load_config(path, env={}, cwd=tmp_path).serving.min_replicas == 2

    with pytest.raises(ConfigError) as info:
        load_config(None, env={"FACTORY_SERVING__MIN_REPLICAS": "5"}, cwd=tmp_path)
    assert "FACTORY_SERVING__MIN_REPLICAS" in one_line(info.value)


def test_every_replica_setting_of_the_serving_config_reaches_the_server_args() -> None:
    # Defined once (factory.config.ReplicaSettings): a setting added there is a config key, a server
    # argument and carried from one to the other, with no second list to forget.
    from factory.config import ReplicaSettings

    changed = {"replica_cpus": 2.0, "replica_gpus": 0.5, "min_replicas": 2, "max_replicas": 3,
               "target_ongoing_requests": 4.0, "max_ongoing_requests": 9, "max_batch_size": 7,
               "batch_wait_timeout_s": 0.01, "request_timeout_s": 5.0, "inline_predict_ms": 0.0,
               "report_interval_s": 2.0}
    assert set(changed) == set(ReplicaSettings.model_fields)
    serving = ServingConfig(**changed)
    args = ServerArgs(endpoint="e", model="m:1", **serving.replica_settings().model_dump())
    assert {name: getattr(args, name) for name in changed} == changed
