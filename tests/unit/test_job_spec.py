"""Job specs: every kind loads, every mistake is one line naming the field, deadlines and capacity checked.

No Ray: only `to_tune_space` imports `ray.tune` (no cluster is started).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from factory.errors import ConfigError
from factory.jobs import (
    ClusterCapacity,
    CommandJobSpec,
    JobSpec,
    JobSpecError,
    TrainJobSpec,
    TuneJobSpec,
    load_callable,
    load_job_spec,
    parse_job_spec,
    resolve_deadline,
    spec_hash,
    to_tune_space,
    validate_for_submission,
)
from factory.jobs.stored import run_result, schedule_of, stored_spec, submitted_lineage, train_loop_of
from factory.store import JobRow
from tests.support import REPO_ROOT

NOW_S = datetime(2025, 7, 1, 12, 0, tzinfo=UTC).timestamp()
TWO_ONE_GPU_NODES = ClusterCapacity(node_gpus=(1, 1), node_cpus=(8, 8))

TRAIN = """\
name: resnet
kind: train
train_loop: mypkg.train:train_loop_per_worker
num_workers: 4
gpus_per_worker: 2
cpus_per_worker: 3
estimated_duration_s: 3600
deadline: 12h
config: {epochs: 3}
"""
TUNE = """\
name: sweep
kind: tune
train_loop: mypkg.train:trainable
estimated_duration_s: 600
tune:
  search_space:
    lr: {loguniform: [1.0e-4, 1.0e-1]}
    hidden: {choice: [32, 64]}
    layers: 2
  num_samples: 8
  metric: loss
  mode: min
"""
COMMAND = """\
name: hello
kind: command
entrypoint: python -c "print('hi')"
estimated_duration_s: 5
runtime_env: {env_vars: {GREETING: hi}}
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def minimal(kind: str = "train", **fields: Any) -> dict[str, Any]:
    """The smallest valid spec of `kind`, with `fields` set (a value of None drops the field)."""
    spec: dict[str, Any] = {"name": "job", "kind": kind, "estimated_duration_s": 60}
    if kind in ("train", "tune"):
        spec["train_loop"] = "mypkg.train:loop"
    if kind == "tune":
        spec["tune"] = {"search_space": {"lr": {"uniform": [0.1, 0.2]}}, "num_samples": 2,
                        "metric": "loss", "mode": "min"}
    if kind == "command":
        spec["entrypoint"] = "echo hi"
    spec.update(fields)
    return {key: value for key, value in spec.items() if value is not None}


def error_of(data: Any, source: str = "jobs/x.yaml") -> str:
    """The one-line message `parse_job_spec` must raise; fails the test if the spec loads."""
    with pytest.raises(JobSpecError) as caught:
        parse_job_spec(data, source)
    return one_line(caught.value)


def one_line(error: JobSpecError) -> str:
    message = str(error)
    assert "\n" not in message, f"a job spec error must be one line: {message!r}"
    assert isinstance(error, ConfigError) and error.exit_code == 2
    return message


def submission_error(spec: JobSpec, cluster: ClusterCapacity = TWO_ONE_GPU_NODES) -> str:
    with pytest.raises(JobSpecError) as caught:
        validate_for_submission(spec, NOW_S, cluster, source="jobs/x.yaml")
    return one_line(caught.value)


# --- each kind loads ----------------------------------------------------------------------------


def test_a_train_spec_loads_with_its_fields_and_the_defaults(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path, TRAIN))

    assert isinstance(spec, TrainJobSpec)
    assert (spec.name, spec.kind, spec.train_loop) == ("resnet", "train", "mypkg.train:train_loop_per_worker")
    assert (spec.total_gpus, spec.total_cpus) == (8, 12)
    assert spec.config == {"epochs": 3}
    assert (spec.team, spec.priority, spec.preemptible, spec.max_retries) == ("default", 0, True, 0)
    assert spec.max_price_per_mwh is None and spec.register_as is None


def test_a_tune_spec_loads_with_its_section(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path, TUNE))

    assert isinstance(spec, TuneJobSpec)
    assert spec.tune.search_space["lr"] == {"loguniform": [1e-4, 1e-1]}
    assert (spec.tune.num_samples, spec.tune.metric, spec.tune.mode) == (8, "loss", "min")
    assert spec.tune.scheduler == "asha" and spec.tune.max_concurrent_trials is None


def test_a_command_spec_loads_cpu_only_by_default(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path, COMMAND))

    assert isinstance(spec, CommandJobSpec)
    assert spec.entrypoint == "python -c \"print('hi')\""
    assert spec.runtime_env == {"env_vars": {"GREETING": "hi"}}
    assert (spec.num_workers, spec.gpus_per_worker, spec.cpus_per_worker, spec.total_gpus) == (1, 0, 1, 0)


def test_model_validate_returns_the_kind_and_the_base_cannot_be_built_directly() -> None:
    assert type(JobSpec.model_validate(minimal("command"))) is CommandJobSpec
    assert type(JobSpec.model_validate(minimal("tune"))) is TuneJobSpec
    assert TrainJobSpec(name="a", train_loop="m:f", estimated_duration_s=1).kind == "train"
    with pytest.raises(ValidationError):
        JobSpec.model_validate(minimal(kind="trian"))
    with pytest.raises(TypeError, match="model_validate"):
        JobSpec(**minimal())


def test_specs_are_frozen() -> None:
    spec = parse_job_spec(minimal())
    with pytest.raises(ValidationError):
        spec.num_workers = 8  # type: ignore[misc]


# --- one line per mistake, naming the field ------------------------------------------------------


def test_an_unknown_key_suggests_the_nearest_field() -> None:
    message = error_of(minimal(num_worker=2))

    assert message == "jobs/x.yaml: unknown field 'num_worker' for kind 'train', did you mean 'num_workers'?"


def test_an_unknown_key_in_the_tune_section_names_the_section() -> None:
    tune = minimal("tune")["tune"] | {"num_sample": 3}

    message = error_of(minimal("tune", tune=tune))

    assert "unknown field 'num_sample' in section 'tune', did you mean 'num_samples'?" in message


@pytest.mark.parametrize(("kind", "field", "owner"), [
    ("train", "entrypoint", "'command'"),
    ("train", "tune", "'tune'"),
    ("command", "train_loop", "'train' or 'tune'"),
    ("tune", "runtime_env", "'command'"),
])
def test_a_field_of_another_kind_names_the_kind_it_belongs_to(kind: str, field: str, owner: str) -> None:
    message = error_of(minimal(kind, **{field: {"x": 1} if field in ("tune", "runtime_env") else "x:y"}))

    assert message == f"jobs/x.yaml: field '{field}' is not used by kind '{kind}': it belongs to kind {owner}"


@pytest.mark.parametrize(("kind", "field", "hint"), [
    ("train", "train_loop", "'package.module:function'"),
    ("tune", "tune", "search_space, num_samples, metric and mode"),
    ("command", "entrypoint", "shell command"),
    ("command", "estimated_duration_s", "seconds"),
])
def test_a_missing_required_field_is_named_with_what_to_write(kind: str, field: str, hint: str) -> None:
    message = error_of(minimal(kind, **{field: None}))

    assert message.startswith(f"jobs/x.yaml: field '{field}' is required for kind '{kind}'")
    assert hint in message


def test_a_misspelt_required_field_is_reported_as_the_typo_first() -> None:
    data = minimal(train_loop=None, train_lop="m:f")

    assert error_of(data).startswith("jobs/x.yaml: unknown field 'train_lop' for kind 'train', "
                                     "did you mean 'train_loop'?")


def test_a_missing_or_misspelt_kind_is_the_only_error_reported() -> None:
    assert error_of(minimal(kind=None)) == ("jobs/x.yaml: field 'kind' is required: "
                                            "one of 'train', 'tune', 'command'")
    assert error_of(minimal(kind="tunes")) == ("jobs/x.yaml: field 'kind' must be one of 'train', 'tune', "
                                               "'command' (got 'tunes'), did you mean 'tune'?")


@pytest.mark.parametrize(("fields", "path", "reason"), [
    ({"num_workers": 0}, "num_workers", "greater than or equal to 1"),
    ({"num_workers": "two"}, "num_workers", "valid integer"),
    ({"gpus_per_worker": -1}, "gpus_per_worker", "greater than or equal to 0"),
    ({"cpus_per_worker": 0}, "cpus_per_worker", "greater than or equal to 1"),
    ({"estimated_duration_s": 0}, "estimated_duration_s", "greater than 0"),
    ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
    ({"preemptible": "maybe"}, "preemptible", "valid boolean"),
    ({"priority": 1.5}, "priority", "valid integer"),
    ({"config": [1, 2]}, "config", "valid dictionary"),
])
def test_a_wrong_value_names_the_field_and_the_value(fields: dict[str, Any], path: str, reason: str) -> None:
    message = error_of(minimal(**fields))

    assert message.startswith(f"jobs/x.yaml: field '{path}': ")
    assert reason in message and repr(next(iter(fields.values()))) in message


@pytest.mark.parametrize(("tune", "path", "reason"), [
    ({"num_samples": 0}, "tune.num_samples", "greater than or equal to 1"),
    ({"mode": "minimize"}, "tune.mode", "'min' or 'max'"),
    ({"scheduler": "pbt"}, "tune.scheduler", "'asha' or 'fifo'"),
    ({"max_concurrent_trials": 0}, "tune.max_concurrent_trials", "greater than or equal to 1"),
    ({"search_space": {}}, "tune.search_space", "at least one parameter"),
    ({"search_space": {"lr": {"loguniform": [0, 1]}}}, "tune.search_space", "'lr': loguniform needs 0 < low"),
    ({"search_space": {"lr": {"uniform": [1, 1]}}}, "tune.search_space", "uniform needs low < high"),
    ({"search_space": {"h": {"randint": [1.5, 4]}}}, "tune.search_space", "randint bounds must be integers"),
    ({"search_space": {"h": {"choice": []}}}, "tune.search_space", "choice needs at least one value"),
    ({"search_space": {"lr": {"uniform": 0.1}}}, "tune.search_space", "uniform takes a list"),
    ({"search_space": {"lr": {"logunifrom": [0.1, 1]}}}, "tune.search_space", "did you mean 'loguniform'?"),
    ({"search_space": {"net": {"lr": {"loguniform": [-1, 1]}}}}, "tune.search_space", "key 'net.lr'"),
])
def test_a_bad_tune_section_names_the_field_inside_it(tune: dict[str, Any], path: str, reason: str) -> None:
    data = minimal("tune")
    data["tune"] = data["tune"] | tune

    message = error_of(data)

    assert message.startswith(f"jobs/x.yaml: field '{path}'") and reason in message


def test_yaml_exponents_without_a_dot_are_explained(tmp_path: Path) -> None:
    text = TUNE.replace("[1.0e-4, 1.0e-1]", "[1e-4, 1e-1]")  # PyYAML reads these as strings

    with pytest.raises(JobSpecError) as caught:
        load_job_spec(write(tmp_path, text))

    assert "write exponents with a dot, e.g. 1.0e-4" in one_line(caught.value)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "-flag", ".hidden", "x" * 65, "é"])
def test_a_name_that_is_not_a_safe_identifier_is_rejected(name: str) -> None:
    message = error_of(minimal(name=name))

    assert message.startswith("jobs/x.yaml: field 'name': must be 1-64 letters, digits")


@pytest.mark.parametrize("name", ["a", "resnet-50_v2.1", "_x", "x" * 64])
def test_safe_names_load(name: str) -> None:
    assert parse_job_spec(minimal(name=name)).name == name


def test_team_and_register_as_follow_the_name_rule() -> None:
    assert error_of(minimal(team="ml team")).startswith("jobs/x.yaml: field 'team': must be")
    assert error_of(minimal(register_as="../model")).startswith("jobs/x.yaml: field 'register_as': must be")


@pytest.mark.parametrize(("path", "reason"), [
    ("mypkg.train", "no ':' before the function"),
    (":loop", "is not a module path"),
    ("my-pkg.train:loop", "'my-pkg.train' is not a module path"),
    ("mypkg.train:", "after ':' is not a Python name"),
    ("mypkg.train:1loop", "'1loop' after ':' is not a Python name"),
])
def test_a_malformed_train_loop_is_rejected_at_load_time(path: str, reason: str) -> None:
    message = error_of(minimal(train_loop=path))

    assert message.startswith("jobs/x.yaml: field 'train_loop': ") and reason in message


def test_command_entrypoint_and_runtime_env_mistakes_are_named() -> None:
    blank = error_of(minimal("command", entrypoint="  "))
    assert blank.startswith("jobs/x.yaml: field 'entrypoint': must be")
    assert error_of(minimal("command", runtime_env={"env_var": {"A": "1"}})) == (
        "jobs/x.yaml: field 'runtime_env': unknown key 'env_var', did you mean 'env_vars'?")
    number = error_of(minimal("command", runtime_env={"env_vars": {"PORT": 80}}))
    assert number == "jobs/x.yaml: field 'runtime_env': env_vars.PORT must be a string; quote it (PORT: '80')"
    # Keys far from Ray's own pass through: runtime_env plugins add their own.
    assert parse_job_spec(minimal("command", runtime_env={"my_plugin": {}})).runtime_env == {"my_plugin": {}}


def test_several_errors_report_the_first_and_count_the_rest() -> None:
    message = error_of(minimal(num_workers=0, cpus_per_worker=0, priority="high"))

    assert message.startswith("jobs/x.yaml: field 'num_workers': ") and message.endswith("(and 2 more)")


# --- files --------------------------------------------------------------------------------------


def test_file_problems_name_the_file(tmp_path: Path) -> None:
    def load_error(path: Path) -> str:
        with pytest.raises(JobSpecError) as caught:
            load_job_spec(path)
        return one_line(caught.value)

    missing = tmp_path / "nope.yaml"
    assert load_error(missing) == f"cannot read job spec {missing}: No such file or directory"
    bad = write(tmp_path, "name: [unclosed\n", "bad.yaml")
    assert load_error(bad).startswith(f"{bad}: invalid YAML at line 2")
    empty = write(tmp_path, "# nothing\n", "empty.yaml")
    assert load_error(empty).startswith(f"{empty}: the file is empty")
    listed = write(tmp_path, "- name: x\n", "list.yaml")
    assert load_error(listed) == f"{listed}: expected a mapping of fields at top level, got list"
    typo = write(tmp_path, TRAIN.replace("num_workers", "num_worker"), "typo.yaml")
    assert load_error(typo).startswith(f"{typo}: unknown field 'num_worker'")


# --- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("deadline", "seconds"), [
    ("12h", 43200), ("30m", 1800), ("90s", 90), ("2d", 172800), ("1h30m", 5400), ("1.5h", 5400),
    ("1d2h3m4s", 93784),
])
def test_a_relative_deadline_counts_from_now(deadline: str, seconds: float) -> None:
    assert resolve_deadline(deadline, NOW_S) == NOW_S + seconds
    assert parse_job_spec(minimal(deadline=deadline)).deadline == deadline  # kept as written


@pytest.mark.parametrize("deadline", [
    "2025-07-01T12:00:00+00:00", "2025-07-01T12:00:00Z", "2025-07-01T14:00:00+02:00",
    "2025-07-01T07:00:00-05:00",
])
def test_an_iso_deadline_resolves_to_the_same_instant_whatever_its_offset(deadline: str) -> None:
    assert resolve_deadline(deadline, now_s=0) == NOW_S


def test_an_unquoted_yaml_timestamp_loads_as_that_instant(tmp_path: Path) -> None:
    text = TRAIN.replace("deadline: 12h", "deadline: 2025-07-01T14:00:00+02:00")

    spec = load_job_spec(write(tmp_path, text))

    assert spec.deadline is not None and resolve_deadline(spec.deadline, now_s=0) == NOW_S


@pytest.mark.parametrize(("deadline", "reason"), [
    ("2025-07-01T12:00:00", "has no UTC offset; add one such as +00:00"),
    ("2025-07-01", "has no UTC offset; add one such as +00:00"),
    ("tomorrow", "is neither a duration"),
    ("12 hours", "is neither a duration"),
    ("0h", "give a positive duration"),
    (3600, "a bare number is ambiguous; write '3600s'"),
])
def test_a_bad_deadline_is_rejected_at_load_time(deadline: Any, reason: str) -> None:
    message = error_of(minimal(deadline=deadline))

    assert message.startswith("jobs/x.yaml: field 'deadline': ") and reason in message


def test_naive_yaml_timestamps_and_dates_are_rejected_with_the_fix(tmp_path: Path) -> None:
    for value, reason in (("2025-07-01 12:00:00", "add one such as +00:00"),
                          ("2025-07-01", "a date without a time")):
        with pytest.raises(JobSpecError) as caught:
            load_job_spec(write(tmp_path, TRAIN.replace("deadline: 12h", f"deadline: {value}")))
        assert "field 'deadline'" in one_line(caught.value) and reason in str(caught.value)


def test_resolve_deadline_rejects_naive_times_and_nonsense() -> None:
    with pytest.raises(JobSpecError, match=r"has no UTC offset; add one such as \+00:00"):
        resolve_deadline("2025-07-01T12:00:00", NOW_S)
    with pytest.raises(JobSpecError, match=r"has no UTC offset"):
        resolve_deadline(datetime(2025, 7, 1, 12), NOW_S)
    with pytest.raises(JobSpecError, match="is neither a duration"):
        resolve_deadline("soon", NOW_S)
    assert resolve_deadline(datetime(2025, 7, 1, 12, tzinfo=UTC), now_s=0) == NOW_S


# --- submission against the clock and the cluster -------------------------------------------------


def test_a_feasible_spec_passes_and_gets_its_absolute_deadline() -> None:
    spec = parse_job_spec(minimal(num_workers=2, gpus_per_worker=1, deadline="6h"))

    assert validate_for_submission(spec, NOW_S, TWO_ONE_GPU_NODES) == NOW_S + 6 * 3600
    assert validate_for_submission(parse_job_spec(minimal()), NOW_S, TWO_ONE_GPU_NODES) is None


def test_a_deadline_in_the_past_is_rejected() -> None:
    spec = parse_job_spec(minimal(deadline="2025-07-01T11:00:00Z"))

    assert submission_error(spec) == (
        "jobs/x.yaml: field 'deadline': 2025-07-01T11:00:00Z passed 3600 s ago "
        "(now 2025-07-01T12:00:00+00:00); set a later time or a duration such as '6h'")


@pytest.mark.parametrize("deadline", ["30m", "2025-07-01T12:30:00+00:00"])
def test_a_deadline_shorter_than_the_estimated_duration_is_rejected(deadline: str) -> None:
    spec = parse_job_spec(minimal(deadline=deadline, estimated_duration_s=3600))

    message = submission_error(spec)

    assert message.startswith("jobs/x.yaml: field 'deadline': ")
    assert "leaves 1800 s but estimated_duration_s is 3600" in message


def test_a_deadline_exactly_the_estimated_duration_away_is_accepted() -> None:
    spec = parse_job_spec(minimal(deadline="1h", estimated_duration_s=3600))

    assert validate_for_submission(spec, NOW_S, TWO_ONE_GPU_NODES) == NOW_S + 3600


@pytest.mark.parametrize(("fields", "cluster", "expected"), [
    ({"gpus_per_worker": 2}, TWO_ONE_GPU_NODES,
     "field 'gpus_per_worker': 2 GPUs per worker but the largest node has 1"),
    ({"gpus_per_worker": 1}, ClusterCapacity((0, 0), (8, 8)), "set gpus_per_worker: 0 for a CPU-only job"),
    ({"num_workers": 3, "gpus_per_worker": 1}, TWO_ONE_GPU_NODES,
     "field 'num_workers': the job needs 3 GPUs (3 workers x 1) but the cluster has 2 in all"),
    ({"cpus_per_worker": 9}, TWO_ONE_GPU_NODES,
     "field 'cpus_per_worker': 9 CPUs per worker but the largest node has 8"),
    ({"num_workers": 5, "cpus_per_worker": 4}, TWO_ONE_GPU_NODES,
     "field 'num_workers': the job needs 20 CPUs (5 workers x 4) but the cluster has 16 in all"),
    # 6 GPUs in all, but a 2-GPU worker fits once on each 3-GPU node: 2 workers, not 3.
    ({"num_workers": 3, "gpus_per_worker": 2}, ClusterCapacity((3, 3), (8, 8)),
     "field 'num_workers': the nodes hold only 2 workers of 2 GPUs and 1 CPUs at once, not 3"),
    # Enough GPUs and CPUs in all, but the GPU node has too few CPUs for both workers.
    ({"num_workers": 2, "gpus_per_worker": 1, "cpus_per_worker": 6}, ClusterCapacity((2, 0), (8, 8)),
     "the nodes hold only 1 workers"),
])
def test_more_than_the_cluster_can_ever_offer_is_rejected(
    fields: dict[str, Any], cluster: ClusterCapacity, expected: str
) -> None:
    message = submission_error(parse_job_spec(minimal(**fields)), cluster)

    assert message.startswith("jobs/x.yaml: ") and expected in message


def test_without_a_source_the_job_is_named() -> None:
    with pytest.raises(JobSpecError, match=r"^job 'job': field 'gpus_per_worker'"):
        validate_for_submission(parse_job_spec(minimal(gpus_per_worker=4)), NOW_S, TWO_ONE_GPU_NODES)


def test_cluster_capacity_from_ray_nodes_counts_alive_nodes_whole_resources() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0, "memory": 1e9}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
             {"Alive": True, "Resources": {"CPU": 7.5}}]

    cluster = ClusterCapacity.from_ray_nodes(nodes)

    assert cluster == ClusterCapacity(node_gpus=(4, 0), node_cpus=(16, 7))
    assert (cluster.total_gpus, cluster.total_cpus) == (4, 23)
    with pytest.raises(ValueError, match="same nodes"):
        ClusterCapacity(node_gpus=(1,), node_cpus=())


# --- import paths, search spaces, hashes ----------------------------------------------------------


def test_load_callable_imports_the_function() -> None:
    assert load_callable("json:dumps") is json.dumps
    assert load_callable("os.path:join")("a", "b") == "a/b"


@pytest.mark.parametrize(("path", "expected"), [
    ("no_such_module_xyz:f", "import path 'no_such_module_xyz:f': no module named 'no_such_module_xyz'"),
    ("json.no_such_sub:f", "no module named 'json.no_such_sub'"),
    ("json:dumpz", "import path 'json:dumpz': 'json' has no attribute 'dumpz', did you mean"),
    ("json:__name__", "'json.__name__' is a str, not a function"),
    ("json", "no ':' before the function"),
])
def test_load_callable_names_the_path_it_cannot_load(path: str, expected: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        load_callable(path)

    assert expected in one_line(caught.value)


def test_a_module_that_fails_to_import_is_one_line_naming_the_path(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_job_module.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(JobSpecError) as caught:
        load_callable("broken_job_module:loop")

    assert one_line(caught.value) == (
        "import path 'broken_job_module:loop': importing 'broken_job_module' failed: "
        "No module named 'no_such_dependency_xyz'")


def test_to_tune_space_builds_ray_tune_samplers() -> None:
    sample = pytest.importorskip("ray.tune.search.sample")
    space = to_tune_space({"lr": {"loguniform": [1e-4, 1e-1]}, "dropout": {"uniform": [0.0, 0.5]},
                           "hidden": {"choice": [32, 64]}, "layers": {"randint": [1, 4]},
                           "seed": {"grid_search": [0, 1]}, "opt": {"momentum": {"uniform": [0.8, 0.99]}},
                           "epochs": 3, "name": "x"})

    assert isinstance(space["lr"], sample.Float) and (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-1)
    assert isinstance(space["lr"].sampler, sample.LogUniform)
    assert isinstance(space["dropout"].sampler, sample.Uniform)
    assert isinstance(space["hidden"], sample.Categorical) and space["hidden"].categories == [32, 64]
    assert isinstance(space["layers"], sample.Integer)
    assert (space["layers"].lower, space["layers"].upper) == (1, 4)
    assert space["seed"] == {"grid_search": [0, 1]}
    assert isinstance(space["opt"]["momentum"], sample.Float)
    assert (space["epochs"], space["name"]) == (3, "x")
    with pytest.raises(ValueError, match="loguniform needs 0 < low"):
        to_tune_space({"lr": {"loguniform": [0, 1]}})


def test_spec_hash_is_the_same_for_the_same_spec_and_differs_otherwise(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path, TRAIN))
    reordered = parse_job_spec(dict(reversed(list(parse_job_spec(minimal()).model_dump().items()))))
    explicit_defaults = parse_job_spec(minimal(team="default", preemptible=True, priority=0, max_retries=0))

    assert len(spec_hash(spec)) == 64 and int(spec_hash(spec), 16) >= 0
    assert spec_hash(spec) == spec_hash(load_job_spec(write(tmp_path, TRAIN, "copy.yaml")))
    assert spec_hash(parse_job_spec(minimal())) == spec_hash(reordered) == spec_hash(explicit_defaults)
    assert spec_hash(spec) != spec_hash(spec.model_copy(update={"num_workers": 5}))
    lr_01, lr_02 = (parse_job_spec(minimal(config={"lr": lr})) for lr in (0.1, 0.2))
    assert spec_hash(lr_01) != spec_hash(lr_02)


# --- the shipped examples -------------------------------------------------------------------------


def test_the_shipped_example_specs_load_and_fit_a_two_gpu_cluster() -> None:
    paths = sorted((REPO_ROOT / "configs" / "jobs").glob("*.yaml"))
    specs = {path.name: load_job_spec(path) for path in paths}

    assert set(specs) >= {"train-regression.yaml", "tune-regression.yaml", "command-hello.yaml"}
    train, tune = specs["train-regression.yaml"], specs["tune-regression.yaml"]
    command = specs["command-hello.yaml"]
    assert isinstance(train, TrainJobSpec)
    assert train.train_loop == "factory.examples.regression:train_loop_per_worker"
    assert (train.num_workers, train.gpus_per_worker, train.deadline) == (2, 1, "6h")
    assert train.estimated_duration_s == 120 and train.register_as == "regression"
    assert {"epochs", "lr", "batch_size", "num_samples"} <= set(train.config)
    assert isinstance(tune, TuneJobSpec) and tune.train_loop == "factory.examples.regression:tune_trainable"
    assert (tune.tune.num_samples, tune.tune.metric, tune.tune.mode) == (4, "loss", "min")
    assert tune.tune.scheduler == "asha"
    assert set(tune.tune.search_space) == {"lr", "hidden"}
    assert isinstance(command, CommandJobSpec) and "hello from the factory" in command.entrypoint
    for name, spec in specs.items():
        deadline_s = validate_for_submission(spec, NOW_S, TWO_ONE_GPU_NODES, source=name)
        assert deadline_s is None or deadline_s > NOW_S + spec.estimated_duration_s


def test_a_command_job_cannot_promise_a_model_to_register() -> None:
    message = error_of(minimal("command", register_as="model"))
    assert "register_as" in message and "factory register PATH" in message
    assert "parent_model" in error_of(minimal("command", parent_model="base:1"))


def test_a_parent_model_is_a_model_reference() -> None:
    assert parse_job_spec(minimal("train", parent_model="base@production")).parent_model == "base@production"
    message = error_of(minimal("train", parent_model="base:zero"))
    assert "parent_model" in message and "NAME:3" in message


def test_a_stored_spec_reads_back_typed_with_the_defaults_the_submission_had() -> None:
    submitted = parse_job_spec({"name": "fit", "kind": "train", "estimated_duration_s": 60.0,
                                "train_loop": "factory.examples.regression:train_loop_per_worker"})
    job = JobRow(job_id="fit-1", name="fit", team="default", kind="train",
                 spec=submitted.model_dump(mode="json"), spec_hash=spec_hash(submitted), state="QUEUED",
                 submitted_s=0.0, updated_s=0.0)
    spec = stored_spec(job)
    assert spec == submitted and isinstance(spec, TrainJobSpec)
    assert (spec.num_workers, spec.gpus_per_worker, spec.preemptible, spec.priority) == (1, 0, True, 0)
    assert train_loop_of(job) == "factory.examples.regression:train_loop_per_worker"


def test_a_stored_spec_that_no_longer_parses_is_one_line_naming_the_job() -> None:
    job = JobRow(job_id="old-1", name="old", team="default", kind="train", spec={"name": "old"},
                 spec_hash="h", state="SUCCEEDED", submitted_s=0.0, updated_s=0.0)
    with pytest.raises(JobSpecError, match=r"^job old-1's stored spec: field 'kind' is required") as caught:
        stored_spec(job)
    assert "\n" not in str(caught.value)


def test_a_spec_stored_by_an_older_release_that_todays_rules_refuse_still_reads() -> None:
    # e.g. a command job with register_as, accepted then: the scheduler must still read it.
    spec = {"name": "old", "kind": "command", "entrypoint": "true", "estimated_duration_s": 60.0,
            "register_as": "not a safe name!"}
    job = JobRow(job_id="old-2", name="old", team="default", kind="command", spec=spec, spec_hash="h2",
                 state="SUCCEEDED", submitted_s=0.0, updated_s=0.0)
    read = stored_spec(job)
    assert isinstance(read, CommandJobSpec) and read.register_as == "not a safe name!"
    assert (read.num_workers, read.gpus_per_worker, read.total_gpus) == (1, 0, 0)  # defaults filled in


def test_a_runs_result_and_its_submitted_lineage_read_back_typed() -> None:
    job = JobRow(job_id="fit-2", name="fit", team="default", kind="train", spec={}, spec_hash="h3",
                 state="SUCCEEDED", submitted_s=0.0, updated_s=0.0,
                 progress={"step": 40, "loss": 0.1, "epoch": 2, "checkpoint_path": "/runs/fit-2/ckpt"},
                 schedule={"lineage": {"parent": "base:3", "code": {"git_commit": "a" * 40}}})
    result = run_result(job)
    assert (result.checkpoint_path, result.step) == ("/runs/fit-2/ckpt", 40)
    assert result.metrics == {"step": 40, "loss": 0.1, "epoch": 2}  # the checkpoint is bookkeeping
    lineage = submitted_lineage(job)
    assert (lineage.parent, lineage.code) == ("base:3", {"git_commit": "a" * 40})
    fresh = job.model_copy(update={"progress": {"loss": 0.2, "step": True}, "schedule": {}})
    assert run_result(fresh).step is None and run_result(fresh).checkpoint_path is None  # no step counter
    assert submitted_lineage(fresh).parent is None


def test_a_jobs_schedule_facts_read_back_typed_and_keep_what_they_do_not_name() -> None:
    job = JobRow(job_id="fit-3", name="fit", team="default", kind="train", spec={}, spec_hash="h4",
                 state="PAUSED", submitted_s=0.0, updated_s=0.0,
                 schedule={"admitted": True, "run_s": 120, "runs": [[0, 60, 2], [100, 160, 2]],
                           "pauses_s": [60], "resume_overheads_s": [12.5], "written_by_a_newer_release": 1})
    schedule = schedule_of(job)
    assert schedule.admitted and not schedule.at_risk and schedule.run_s == 120.0
    assert schedule.runs == ((0.0, 60.0, 2), (100.0, 160.0, 2)) and schedule.started_s is None
    assert schedule.pauses_s == (60.0,) and schedule.resume_overheads_s == (12.5,)
    assert schedule.model_extra == {"written_by_a_newer_release": 1}
    # A fact in a shape today's model refuses (an older release's) does not stop the scheduler's read.
    odd = job.model_copy(update={"schedule": {"admitted": True, "placement": "node-1"}})
    assert schedule_of(odd).admitted and schedule_of(odd).run_s == 0.0
