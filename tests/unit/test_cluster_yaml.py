"""Checks of the Ray cluster launcher config (cluster.yaml), without starting Ray.

The config is validated the way `ray up` does it: `prepare_config` merges the
provider's defaults.yaml (offline for AWS; no boto3 or credentials needed) and
then `validate_config` checks the result against Ray's JSON schema.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"

Config = dict[str, Any]


def _prepared(config: Config) -> Config:
    """Return `config` with Ray's defaults merged in, as `ray up` does first."""
    return prepare_config(copy.deepcopy(config))


def _worker_types(config: Config) -> dict[str, Config]:
    """Return the node types other than the head node type."""
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


@pytest.fixture(scope="module")
def raw() -> Config:
    """cluster.yaml as written."""
    with CLUSTER_YAML.open() as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def prepared(raw: Config) -> Config:
    """cluster.yaml after Ray's default filling (setup commands merged etc.)."""
    return _prepared(raw)


def test_ray_validation_passes(prepared: Config) -> None:
    validate_config(prepared)


def test_unknown_top_level_key_is_rejected(raw: Config) -> None:
    broken = copy.deepcopy(raw)
    broken["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(_prepared(broken))


def test_unknown_node_type_key_is_rejected(raw: Config) -> None:
    broken = copy.deepcopy(raw)
    next(iter(_worker_types(broken).values()))["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        validate_config(_prepared(broken))


def test_min_workers_over_global_max_is_rejected(raw: Config) -> None:
    broken = copy.deepcopy(raw)
    for node_type in _worker_types(broken).values():
        node_type["min_workers"] = broken["max_workers"]
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(_prepared(broken))


def test_per_type_worker_bounds_are_consistent(prepared: Config) -> None:
    # Ray's validation does not check min_workers <= max_workers per node type.
    workers = _worker_types(prepared)
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert prepared["max_workers"] >= max(t["max_workers"] for t in workers.values())


def test_head_starts_ray_then_factory(raw: Config) -> None:
    commands = raw["head_start_ray_commands"]
    assert commands[0].strip() == "ray stop"
    joined = "\n".join(commands)
    ray_start = joined.find("ray start --head")
    factory_up = joined.find("factory up")
    assert ray_start != -1, "head must run `ray start --head`"
    assert factory_up > ray_start, "`factory up` must run after `ray start --head`"
    # `&&` so that `factory up` runs only if Ray started.
    assert re.search(r"ray start --head[^\n]*&&\s*factory up", joined)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in joined


def test_workers_join_the_head(raw: Config) -> None:
    joined = "\n".join(raw["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in joined
    assert "factory up" not in joined


def test_gpu_workers_and_cpu_head(raw: Config) -> None:
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_workers = {
        name: t["resources"]["GPU"]
        for name, t in _worker_types(raw).items()
        if t.get("resources", {}).get("GPU", 0) >= 1
    }
    assert gpu_workers, "expected at least one worker node type with GPUs"


def test_setup_installs_mounted_project(raw: Config, prepared: Config) -> None:
    mounts: dict[str, str] = raw["file_mounts"]
    # The project (repo root, where `ray up` runs) is mounted on the nodes.
    project_mounts = [
        remote for remote, local in mounts.items() if (REPO_ROOT / local).resolve() == REPO_ROOT
    ]
    assert project_mounts, "file_mounts must copy the repo root to the nodes"
    assert (REPO_ROOT / "pyproject.toml").is_file()

    def installs_project(commands: list[str]) -> bool:
        return any(
            re.search(rf"pip install (-U )?-e {re.escape(remote)}/?(\s|$)", cmd)
            for cmd in commands
            for remote in project_mounts
        )

    # prepare_config prepends setup_commands to both head and worker setup.
    assert installs_project(prepared["head_setup_commands"])
    assert installs_project(prepared["worker_setup_commands"])
