"""The model registry on a real two-node Ray cluster: SDK and CLI, hot copies, storage, restarts.

One cluster for the module (a head with 4 CPUs and 2 simulated GPUs, and a second node with 2 CPUs
marked by the resource `second_node`) and one factory with a 3 MB hot cache, so that eviction is
cheap to reach. Artifacts go to the default local storage under the state dir.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import yaml
from ray.cluster_utils import Cluster
from ray.train import Checkpoint

import factory.client
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.control_plane import REGISTRY, get_actor
from factory.errors import FactoryError
from factory.registry.storage import ArtifactCorruptError
from tests.integration.conftest import REPO_ROOT, cli_at, wait_until

pytestmark = pytest.mark.integration
CACHE_BYTES = 3_000_000


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2})
    cluster.add_node(num_cpus=2, resources={"second_node": 1})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def config(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("registry")
    path = tmp / "factory.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"),
        "clock": {"mode": "replay", "replay_start": "2024-07-01T00:00:00Z", "speed_factor": 60},
        "scheduler": {"policy": "fifo", "tick_s": 0.5},
        "registry": {"cache_bytes": CACHE_BYTES},
    }))
    config = load_config(path, env={})
    lifecycle.up(config)
    yield config
    lifecycle.down(config)


@pytest.fixture(scope="module")
def client(config: FactoryConfig) -> factory.client.FactoryClient:
    return factory.client.connect(config=config)


def cli(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli_at(cluster.address, *args, check=check)


def weights(megabytes: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    count = int(megabytes * 1e6 / 4)
    return {"layer.weight": torch.randn(count, generator=generator), "layer.bias": torch.arange(4.0)}


def stored_file(config: FactoryConfig, row: Any, relpath: str) -> Path:
    return config.state_dir / "artifacts" / row.artifact_key / relpath


def test_each_kind_round_trips_through_the_sdk_and_the_cli(cluster: Cluster, client: Any,
                                                           tmp_path: Path) -> None:
    state = weights(0.1, seed=1)
    row = client.register(state, "rt-state", description="a tiny state_dict")
    assert (row.version, row.kind, list(row.files)) == (1, "state_dict", ["model.pt"])
    loaded = client.load("rt-state")
    assert all(torch.equal(loaded[key], state[key]) for key in state)

    checkpoint = tmp_path / "ckpt"
    (checkpoint / "nested").mkdir(parents=True)
    torch.save({"step": 3}, checkpoint / "state.pt")
    (checkpoint / "nested" / "notes.txt").write_text("hello")
    out = cli(cluster, "register", str(checkpoint), "--name", "rt-ckpt", "--kind", "checkpoint",
              "--tag", "stage=test", "--json")
    registered = json.loads(out.stdout)
    assert (registered["version"], registered["kind"]) == (1, "checkpoint")
    assert registered["tags"] == {"stage": "test"}
    restored = client.load("rt-ckpt", version=1)
    assert isinstance(restored, Checkpoint)
    with restored.as_directory() as directory:
        assert (Path(directory) / "nested" / "notes.txt").read_text() == "hello"
        assert torch.load(Path(directory) / "state.pt")["step"] == 3

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "vocab.txt").write_text("a b c")
    out = cli(cluster, "register", str(folder), "--name", "rt-dir")
    assert out.stdout.startswith("registered rt-dir:1 (directory, 1 files")
    assert (client.load("rt-dir") / "vocab.txt").read_text() == "a b c"

    listed = {m["name"]: m for m in json.loads(cli(cluster, "models", "--json").stdout)}
    assert {"rt-state", "rt-ckpt", "rt-dir"} <= set(listed)
    card = cli(cluster, "model", "rt-ckpt:1").stdout
    assert "rt-ckpt:1" in card and "stage=test" in card and "nested/notes.txt" in card


def test_aliases_move_atomically_with_history_through_the_cli(cluster: Cluster, client: Any) -> None:
    for seed in range(3):
        client.register(weights(0.01, seed), "al-model")
    assert cli(cluster, "promote", "al-model", "1", "--alias", "production").stdout.strip() == \
        "al-model@production -> v1 (new)"
    assert cli(cluster, "promote", "al-model", "3", "--alias", "production").stdout.strip() == \
        "al-model@production -> v3 (from v1)"
    card = json.loads(cli(cluster, "model", "al-model@production", "--json").stdout)
    assert card["version"] == 3 and card["aliases"] == ["production"]
    assert [(c["from_version"], c["version"]) for c in card["alias_history"]] == [(None, 1), (1, 3)]
    assert all(c["set_by"].startswith("cli:") for c in card["alias_history"])
    bad = cli(cluster, "promote", "al-model", "9", "--alias", "production", check=False)
    assert bad.returncode == 1 and "no version 9" in bad.stderr and "Traceback" not in bad.stderr
    assert client.model("al-model", alias="production").version == 3  # unchanged by the refusal
    unknown = cli(cluster, "model", "al-modle", check=False)
    assert unknown.returncode == 1 and "did you mean 'al-model'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_a_registration_whose_commit_fails_leaves_no_version_and_no_files(config: FactoryConfig,
                                                                           client: Any) -> None:
    # The files are staged, then the RegistryActor refuses the commit (a bad tag key, checked there).
    with pytest.raises(FactoryError, match="tag key"):
        client.register(weights(0.01, seed=5), "faulty", tags={"bad key!": "x"})
    assert "faulty" not in {m.name for m in client.models()}
    staged_under = config.state_dir / "artifacts" / "faulty"
    assert not staged_under.exists() or not any(p.is_file() for p in staged_under.rglob("*"))


def test_concurrent_registrations_from_ray_tasks_get_distinct_versions(client: Any) -> None:
    @ray.remote(num_cpus=0.5)
    def register(seed: int) -> int:
        import factory.client as sdk

        return sdk.connect().register(weights(0.01, seed), "concurrent").version

    versions = ray.get([register.remote(seed) for seed in range(6)])
    assert sorted(versions) == list(range(1, 7))
    assert [m.versions for m in client.models() if m.name == "concurrent"] == [6]


def test_a_second_node_loads_the_hot_copy_without_touching_storage(config: FactoryConfig,
                                                                     client: Any) -> None:
    state = weights(1.0, seed=7)
    row = client.register(state, "hot")
    assert client.registry.fetch_info("hot")["cache"] == "miss"
    assert client.registry.fetch_info("hot")["cache"] == "hit"
    # The hot copy is now the only source used: damage the stored file; loads still succeed from it.
    path = stored_file(config, row, "model.pt")
    original = path.read_bytes()
    path.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])

    @ray.remote(num_cpus=0.5, resources={"second_node": 0.01})
    def load_elsewhere() -> tuple[str, float]:
        import factory.client as sdk

        loaded = sdk.connect().load("hot")
        return ray.get_runtime_context().get_node_id(), float(loaded["layer.weight"].sum())

    node_id, total = ray.get(load_elsewhere.remote())
    assert node_id != ray.get_runtime_context().get_node_id()
    assert total == pytest.approx(float(state["layer.weight"].sum()), rel=1e-6)
    hits = client.registry.cache_stats()["hits"]
    assert hits >= 2

    # Evicted (two other 1 MB+ models fill the 3 MB cache), the next load reads storage, verifies it
    # and refuses the damaged file, naming the version and the file.
    for seed in (8, 9):
        client.register(weights(1.0, seed), f"filler-{seed}")
        client.load(f"filler-{seed}")
    assert "hot:1" not in client.registry.cache_stats()["keys"]
    with pytest.raises(ArtifactCorruptError) as info:
        client.load("hot")
    assert "model 'hot' v1" in str(info.value) and "model.pt" in str(info.value)
    events = client.audit_log(action_prefix="model.corrupt")
    assert events and events[-1].subject == "hot:1"
    path.write_bytes(original)  # repaired in storage: loads again, from storage
    assert torch.equal(client.load("hot")["layer.weight"], state["layer.weight"])


def test_eviction_then_reload_from_storage_returns_the_same_weights(client: Any) -> None:
    first, second = weights(1.6, seed=11), weights(1.6, seed=12)
    client.register(first, "evict-a")
    client.register(second, "evict-b")
    assert client.registry.fetch_info("evict-a")["cache"] == "miss"
    assert client.registry.fetch_info("evict-b")["cache"] == "miss"  # 3.2 MB > 3 MB: evicts a
    before = client.registry.cache_stats()["evictions"]
    assert client.registry.fetch_info("evict-a")["cache"] == "miss"
    assert client.registry.cache_stats()["evictions"] > before
    assert torch.equal(client.load("evict-a")["layer.weight"], first["layer.weight"])
    assert client.registry.cache_stats()["used_bytes"] <= CACHE_BYTES


def test_a_trained_job_registers_its_model_with_full_lineage(cluster: Cluster, client: Any,
                                                             tmp_path: Path) -> None:
    client.register(weights(0.01, seed=3), "base-model")
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")
    spec = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "train-regression.yaml").read_text())
    spec.update(name="lineage-fit", deadline="30d", max_retries=0, register_as="regressor",
                dataset=str(data), parent_model="base-model:1")
    spec["config"] = {**spec["config"], "epochs": 2}
    orphan_path = tmp_path / "orphan.yaml"  # a parent the registry lacks: refused before any training
    orphan_path.write_text(yaml.safe_dump({**spec, "parent_model": "no-such-model:1"}))
    refused = cli(cluster, "submit", str(orphan_path), check=False)
    assert refused.returncode == 1 and "'no-such-model' is not in the registry" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    submitted = cli(cluster, "submit", str(spec_path), "--wait", "--json")
    assert submitted.stdout.startswith("{"), (submitted.stdout[-2000:], submitted.stderr[-2000:])
    job = json.loads(submitted.stdout)
    # Registration is part of the job's states; the accounting keeps the outcome for older readers.
    assert (job["state"], job["reason"]) == ("REGISTERED", "registered as regressor:1")
    assert job["accounting"]["model"] == "regressor:1"
    events = json.loads(cli(cluster, "job", job["job_id"], "--json").stdout)["events"]
    assert [event["state"] for event in events][-3:] == ["SUCCEEDED", "REGISTERING", "REGISTERED"]
    again = cli(cluster, "register", "--job", job["job_id"])  # registered: nothing to redo, no 2nd version
    assert again.stdout.strip() == f"{job['job_id']}: REGISTERED (registered as regressor:1)"
    assert next(m for m in client.models() if m.name == "regressor").versions == 1

    card = client.model("regressor")
    lineage = card.lineage
    assert card.kind == "checkpoint" and card.version == 1
    assert lineage["job_id"] == job["job_id"] and lineage["spec_hash"] == job["spec_hash"]
    assert lineage["spec"]["register_as"] == "regressor" and lineage["parent"] == "base-model:1"
    assert lineage["dataset"]["ref"] == str(data) and lineage["dataset"]["fingerprint"].startswith("sha256:")
    assert lineage["metrics"]["loss"] == pytest.approx(job["progress"]["loss"])
    for key in ("gpu_hours", "energy_kwh", "cost"):
        assert lineage[key] == pytest.approx(job["accounting"][key]) and lineage[key] > 0
    assert lineage["training_time_s"] == pytest.approx(job["schedule"]["run_s"])
    assert lineage["training_time_s"] > 0
    assert "carbon_kg" in lineage
    if (REPO_ROOT / ".git").exists():
        assert len(lineage["code"]["git_commit"]) == 40
    text = cli(cluster, "model", "regressor:1").stdout
    assert job["job_id"] in text and "kWh" in text and "parent: base-model:1" in text

    checkpoint = client.load("regressor")
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / "state.pt", weights_only=True)
    assert state["epoch"] == 2


def test_a_job_whose_model_cannot_be_registered_says_why_and_a_retry_never_makes_a_version(
        cluster: Cluster, client: Any, tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "train-regression.yaml").read_text())
    spec.update(name="no-checkpoint", deadline="30d", max_retries=0, register_as="never-saved",
                train_loop="factory.examples.faulty:train_loop_per_worker", num_workers=1,
                config={"fail": "no_checkpoint"})
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    submitted = cli(cluster, "submit", str(spec_path), "--wait", "--json", check=False)
    assert submitted.returncode == 1, submitted.stderr[-2000:]  # it ran, but no model came of it
    job = json.loads(submitted.stdout)
    assert job["state"] == "REGISTRATION_FAILED" and "without a checkpoint" in job["reason"]
    shown = cli(cluster, "jobs").stdout
    assert any(job["job_id"] in line and "REGISTRATION_FAILED" in line for line in shown.splitlines())

    retried = cli(cluster, "register", "--job", job["job_id"], check=False)
    assert retried.returncode == 1 and retried.stdout.startswith(f"{job['job_id']}: REGISTRATION_FAILED (")
    events = client.job(job["job_id"]).events
    assert [(e.from_state, e.state) for e in events][-4:] == [
        ("SUCCEEDED", "REGISTERING"), ("REGISTERING", "REGISTRATION_FAILED"),
        ("REGISTRATION_FAILED", "REGISTERING"), ("REGISTERING", "REGISTRATION_FAILED")]
    assert "retried by" in events[-2].reason
    assert all(m.name != "never-saved" for m in client.models())
    assert any(e.action == "job.registration_retried" and e.subject == job["job_id"]
               for e in client.audit_log(limit=50))
    # Only a job whose registration failed is registered again; a bad call is one line, exit 2.
    not_yet = cli(cluster, "register", "--job", "no-such-job", check=False)
    assert not_yet.returncode == 1 and not_yet.stderr.strip().startswith("error: no job no-such-job")
    both = cli(cluster, "register", str(spec_path), "--job", job["job_id"], check=False)
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1


def test_the_registry_actor_killed_and_restarted_keeps_everything(client: Any) -> None:
    client.register(weights(0.5, seed=21), "survivor")
    client.set_alias("survivor", "champion", 1)
    held = client.registry.fetch_info("survivor")
    client.load("survivor", version=1)
    hits = client.registry.cache_stats()["hits"]
    client.load("survivor", version=1)  # a version loaded lately is read from its hot copy directly
    assert client.registry.cache_stats()["hits"] == hits
    before = {m.name: (m.versions, m.aliases) for m in client.models()}

    def incarnation() -> int | None:
        return next((h.incarnation for h in client.health() if h.name == REGISTRY and h.status == "ok"), None)

    first = incarnation()
    assert first is not None
    ray.kill(get_actor(REGISTRY), no_restart=False)  # asynchronous: wait for the new incarnation
    wait_until(lambda: (incarnation() or 0) > first, "the registry actor restarted by Ray")
    assert {m.name: (m.versions, m.aliases) for m in client.models()} == before
    assert client.model("survivor", alias="champion").version == 1
    assert client.registry.fetch_info("survivor")["cache"] == "miss"  # the hot copies went with it
    # The remembered reference died with the old actor: the load asks the new one, transparently.
    assert torch.equal(client.load("survivor", version=1)["layer.bias"], torch.arange(4.0))
    loaded = client.load("survivor")
    assert torch.equal(loaded["layer.weight"], weights(0.5, seed=21)["layer.weight"])
    del held
