"""The registry's rules without Ray: a real SQLite store and real files, as the RegistryActor uses them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
import torch

from factory.errors import AliasMovedError, FactoryError
from factory.registry.artifacts import check_state_dict, from_hot_payload, hot_payload, load_state_dict_file
from factory.registry.cache import HotCache
from factory.registry.catalog import ModelNotFoundError, ModelRegistry
from factory.registry.hot import hot_copy
from factory.registry.lineage import code_version, dataset_reference, job_lineage
from factory.registry.refs import ModelRef, ModelRefError, make_ref, parse_ref
from factory.registry.storage import ArtifactCorruptError, ArtifactStorage
from factory.store import JobRow, SQLiteStore


@pytest.fixture(params=["local", "subtree"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    """The same registry code over a local path and over another pyarrow filesystem."""
    store = SQLiteStore(tmp_path / "factory.db")
    clock = iter(float(t) for t in range(1_700_000_000, 1_800_000_000))
    if request.param == "local":
        storage = ArtifactStorage(str(tmp_path / "artifacts"))
    else:
        (tmp_path / "bucket").mkdir()
        subtree = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
        storage = ArtifactStorage.from_filesystem(subtree, "models", uri="subtree://bucket/models")
    return ModelRegistry(store, storage, lambda: next(clock))


def stored(registry: ModelRegistry, key: str, relpath: str) -> Path:
    """The file as it lies on disk under either filesystem."""
    root = registry.storage.filesystem
    if isinstance(root, pafs.SubTreeFileSystem):
        return Path(root.base_path) / registry.storage.base / key / relpath
    return Path(registry.storage.base) / key / relpath


def a_model_dir(root: Path, content: str = "weights") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_text(content)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "config.json").write_text('{"layers": 2}')
    return root


def register(registry: ModelRegistry, source: Path, name: str = "mnist", kind: str = "directory",
             **kwargs: object):
    return registry.commit(registry.storage.stage(source, name), name, kind, **kwargs)


def test_versions_are_numbered_per_name_and_resolve_by_version_alias_or_newest(
        registry: ModelRegistry, tmp_path: Path) -> None:
    first = register(registry, a_model_dir(tmp_path / "a", "one"))
    second = register(registry, a_model_dir(tmp_path / "b", "two"), tags={"stage": "baseline"})
    other = register(registry, a_model_dir(tmp_path / "c"), name="resnet")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert second.tags == {"stage": "baseline"} and first.digest != second.digest

    assert registry.resolve(ModelRef("mnist")).version == 2
    assert registry.resolve(ModelRef("mnist", version=1)).digest == first.digest
    registry.set_alias("mnist", "production", 1, set_by="cli:ops")
    assert registry.resolve(ModelRef("mnist", alias="production")).version == 1
    files = registry.read_files(registry.resolve(ModelRef("mnist", alias="production")))
    assert files == {"sub/config.json": b'{"layers": 2}', "weights.bin": b"one"}

    summaries = {s["name"]: s for s in registry.summaries()}
    assert summaries["mnist"]["versions"] == 2 and summaries["mnist"]["latest"] == 2
    assert summaries["mnist"]["aliases"] == {"production": 1}


def test_an_alias_moves_atomically_and_keeps_its_history(registry: ModelRegistry, tmp_path: Path) -> None:
    for index in range(3):
        register(registry, a_model_dir(tmp_path / str(index), str(index)))
    registry.set_alias("mnist", "production", 1, set_by="cli:alice")
    registry.set_alias("mnist", "staging", 3)
    registry.set_alias("mnist", "production", 2, set_by="cli:bob")
    card = registry.card(ModelRef("mnist", version=2))
    assert card["aliases"] == ["production"]
    assert card["all_aliases"] == {"production": 2, "staging": 3}
    moves = [(c["alias"], c["from_version"], c["version"], c["set_by"]) for c in card["alias_history"]]
    assert moves == [("production", None, 1, "cli:alice"), ("staging", None, 3, ""),
                     ("production", 1, 2, "cli:bob")]
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        registry.set_alias("mnist", "production", 9)
    with pytest.raises(ModelNotFoundError, match="start at 1"):
        registry.set_alias("mnist", "production", 0)
    assert registry.resolve(ModelRef("mnist", alias="production")).version == 2  # unchanged
    with pytest.raises(ModelRefError, match="reserved"):
        registry.set_alias("mnist", "latest", 1)


def test_a_conditional_alias_move_is_made_only_if_nobody_moved_the_alias_since(
        registry: ModelRegistry, tmp_path: Path) -> None:
    for index in range(3):
        register(registry, a_model_dir(tmp_path / str(index), str(index)))
    assert registry.store.last_alias_change("mnist", "production") == 0  # never moved
    seen = registry.set_alias("mnist", "production", 2).id
    registry.set_alias("mnist", "staging", 3)  # another alias's move is no move of this one
    assert registry.store.last_alias_change("mnist", "production") == seen
    registry.set_alias("mnist", "production", 3, set_by="cli:alice")
    registry.set_alias("mnist", "production", 2, set_by="cli:alice")  # away and back: same version

    with pytest.raises(AliasMovedError, match="alias 'production' was moved since"):
        registry.set_alias("mnist", "production", 1, if_last_change=seen)

    assert registry.resolve(ModelRef("mnist", alias="production")).version == 2  # nothing changed
    assert len(registry.store.model_alias_history("mnist")) == 4
    latest = registry.store.last_alias_change("mnist", "production")
    assert registry.set_alias("mnist", "production", 1, if_last_change=latest).version == 1


def test_unknown_names_versions_and_aliases_are_one_line_errors(registry: ModelRegistry,
                                                                tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="none is registered yet"):
        registry.resolve(ModelRef("mnist"))
    register(registry, a_model_dir(tmp_path / "a"))
    cases = [(ModelRef("mnsit"), "did you mean 'mnist'"), (ModelRef("mnist", version=4), "versions 1-1"),
             (ModelRef("mnist", alias="prod"), "aliases: none")]
    for ref, expected in cases:
        with pytest.raises(ModelNotFoundError, match=expected) as info:
            registry.resolve(ref)
        assert "\n" not in str(info.value)


def test_a_crash_between_writing_and_committing_leaves_no_visible_version(
        registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, a_model_dir(tmp_path / "a", "one"))
    staged = registry.storage.stage(a_model_dir(tmp_path / "b", "two"), "mnist")
    # The process dies here, before `commit`: the files are in storage, no row points at them.
    assert [row.version for row in registry.store.list_model_versions("mnist")] == [1]
    assert registry.resolve(ModelRef("mnist")).version == 1
    referenced = {row.artifact_key for row in registry.store.list_model_versions("mnist")}
    assert registry.storage.orphans("mnist", referenced) == [staged.key]
    # A later registration is numbered after the last committed one.
    assert register(registry, a_model_dir(tmp_path / "c", "three")).version == 2


def test_a_failure_part_way_through_writing_leaves_no_files_and_no_version(
        registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    real_write = ArtifactStorage._write

    def failing_write(self: ArtifactStorage, path: str, source: Path):  # the disk fills up on file two
        if written:
            raise OSError("No space left on device")
        written.append(path)
        return real_write(self, path, source)

    monkeypatch.setattr(ArtifactStorage, "_write", failing_write)
    with pytest.raises(OSError, match="No space"):
        registry.storage.stage(a_model_dir(tmp_path / "a"), "mnist")
    assert written and registry.storage.orphans("mnist", set()) == []  # the first file was removed too
    assert registry.store.list_model_versions("mnist") == []


def test_a_commit_of_files_that_did_not_all_arrive_is_refused(registry: ModelRegistry,
                                                              tmp_path: Path) -> None:
    staged = registry.storage.stage(a_model_dir(tmp_path / "a"), "mnist")
    stored(registry, staged.key, "weights.bin").unlink()
    with pytest.raises(ArtifactCorruptError, match="weights.bin.*missing"):
        registry.commit(staged, "mnist", "directory")
    assert registry.store.list_model_versions("mnist") == []


def test_a_flipped_byte_is_caught_on_load_naming_the_version_and_file(
        registry: ModelRegistry, tmp_path: Path) -> None:
    row = register(registry, a_model_dir(tmp_path / "a", "weights-weights"))
    path = stored(registry, row.artifact_key, "weights.bin")
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptError) as info:
        registry.read_files(row)
    assert "model 'mnist' v1" in str(info.value) and "weights.bin" in str(info.value)
    assert "\n" not in str(info.value)


def test_concurrent_registrations_of_one_name_get_distinct_versions(registry: ModelRegistry,
                                                                     tmp_path: Path) -> None:
    sources = [a_model_dir(tmp_path / f"s{i}", f"model-{i}") for i in range(8)]
    staged = [registry.storage.stage(source, "mnist") for source in sources]
    versions: list[int] = []
    lock = threading.Lock()

    def commit(index: int) -> None:
        row = registry.commit(staged[index], "mnist", "directory")
        with lock:
            versions.append(row.version)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, 9))


def test_the_hot_cache_evicts_least_recently_used_within_its_bytes() -> None:
    cache = HotCache(capacity_bytes=100)
    assert cache.put(("a", 1), "ref-a", 40) and cache.put(("b", 1), "ref-b", 40)
    assert cache.get(("a", 1)) == "ref-a"  # a is now the most recent
    assert cache.put(("c", 1), "ref-c", 40)  # evicts b
    assert cache.keys() == [("a", 1), ("c", 1)] and cache.get(("b", 1)) is None
    assert not cache.put(("huge", 1), "ref-huge", 101)  # never held
    stats = cache.stats()
    assert (stats.used_bytes, stats.evictions, stats.hits, stats.misses) == (80, 1, 1, 1)


def test_a_state_dict_travels_as_arrays_and_comes_back_equal(tmp_path: Path) -> None:
    state = {"layer.weight": torch.randn(4, 3), "layer.bias": torch.zeros(4), "step": 7,
             "half": torch.ones(2, dtype=torch.bfloat16)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    payload, size_bytes = hot_payload("state_dict", {"model.pt": path.read_bytes()})
    assert size_bytes == 4 * 3 * 4 + 4 * 4 + 2 * 2
    loaded = from_hot_payload(payload, "m", 1, "d" * 64, tmp_path / "cache")
    assert list(loaded) == list(state)
    for key in ("layer.weight", "layer.bias", "half"):
        assert torch.equal(loaded[key], state[key]) and loaded[key].dtype == state[key].dtype
    assert loaded["step"] == 7
    assert torch.equal(load_state_dict_file(path)["layer.weight"], state["layer.weight"])


def test_a_directory_travels_as_bytes_and_lands_once_in_the_local_cache(tmp_path: Path) -> None:
    files = {"weights.bin": b"\x00\x01\x02", "sub/config.json": b"{}"}
    payload, size_bytes = hot_payload("directory", files)
    assert size_bytes == 5
    first = from_hot_payload(payload, "m", 2, "ab" * 32, tmp_path / "cache")
    assert (first / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert (first / "sub" / "config.json").read_bytes() == b"{}"
    mtime_ns = (first / "weights.bin").stat().st_mtime_ns
    assert from_hot_payload(payload, "m", 2, "ab" * 32, tmp_path / "cache") == first  # an intact copy: reused
    assert (first / "weights.bin").stat().st_mtime_ns == mtime_ns
    (first / "weights.bin").write_bytes(b"tampered")
    (first / "stray.txt").write_text("not part of the version")
    again = from_hot_payload(payload, "m", 2, "ab" * 32, tmp_path / "cache")  # a damaged copy: replaced
    assert again == first and (again / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert not (again / "stray.txt").exists()
    other = from_hot_payload(payload, "m", 2, "cd" * 32, tmp_path / "cache")  # another digest: own copy
    assert other != first and (other / "weights.bin").read_bytes() == b"\x00\x01\x02"


def test_a_state_dict_with_code_in_it_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="cannot be loaded safely"):
        check_state_dict({"fn": threading.Lock})


def test_references_parse_as_users_write_them() -> None:
    assert parse_ref("mnist") == ModelRef("mnist")
    assert parse_ref("mnist:3") == ModelRef("mnist", version=3)
    assert parse_ref("mnist@production") == ModelRef("mnist", alias="production")
    assert parse_ref("mnist@latest") == ModelRef("mnist")
    assert make_ref("mnist", "2") == ModelRef("mnist", version=2)
    for bad, expected in [("mnist:0", "number from 1"), ("mnist:x", "number from 1"),
                          ("mn ist", "invalid"), ("a:1@b", "both")]:
        with pytest.raises(ModelRefError, match=expected):
            parse_ref(bad)
    with pytest.raises(ModelRefError, match="not both"):
        make_ref("mnist", 1, "production")
    with pytest.raises(ModelRefError, match="number from 1"):
        parse_ref("mnist:²")  # a digit to Python, not a version


def test_lineage_names_a_jobs_secret_env_vars_but_never_shows_their_values() -> None:
    env_vars = {"API_KEY": "sk-live-123", "MODE": "x"}
    spec = {"name": "cmd", "kind": "command", "estimated_duration_s": 60.0, "entrypoint": "python run.py",
            "runtime_env": {"env_vars": env_vars, "working_dir": "."}}
    job = JobRow(job_id="job-2", name="cmd", team="ops", kind="command", spec=spec, spec_hash="h" * 64,
                 state="SUCCEEDED", submitted_s=0.0, updated_s=1.0)
    lineage = job_lineage(job)
    assert lineage["spec"]["runtime_env"] == {"env_vars": {"API_KEY": "***", "MODE": "***"},
                                              "working_dir": "."}
    assert "sk-live-123" not in repr(lineage)
    assert job.spec["runtime_env"]["env_vars"]["API_KEY"] == "sk-live-123"  # the job itself still has it


def test_lineage_records_the_job_its_code_data_and_what_it_cost(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    job = JobRow(job_id="job-1", name="fit", team="vision", kind="train",
                 spec={"name": "fit", "kind": "train", "estimated_duration_s": 60.0,
                       "train_loop": "factory.examples.regression:train_loop_per_worker",
                       "dataset": str(data), "register_as": "reg"},
                 spec_hash="h" * 64, state="SUCCEEDED", submitted_s=0.0, updated_s=10.0,
                 progress={"loss": 0.1, "checkpoint_path": "/x"},
                 schedule={"runs": [[0.0, 30.0, 2], [50.0, 80.0, 2]]},
                 accounting={"gpu_hours": 1 / 30, "energy_kwh": 0.02, "cost": 0.003, "currency": "USD",
                             "carbon_kg": None, "energy_source": "estimate"})
    lineage = job_lineage(job, parent="reg:1")
    assert lineage["job_id"] == "job-1" and lineage["spec_hash"] == "h" * 64
    assert lineage["metrics"] == {"loss": 0.1}  # the checkpoint path is bookkeeping, not a metric
    assert lineage["training_time_s"] == 60.0 and lineage["energy_kwh"] == 0.02
    assert lineage["parent"] == "reg:1"
    assert lineage["carbon_kg"] is None
    assert lineage["dataset"]["fingerprint"].startswith("sha256:")
    (data / "train.csv").write_text("x,y\n1,3\n")
    assert dataset_reference(str(data))["fingerprint"] != lineage["dataset"]["fingerprint"]
    assert dataset_reference("s3://bucket/train") == {"ref": "s3://bucket/train", "fingerprint": None,
                                                       "size_bytes": None}
    code = code_version("factory.examples.regression:train_loop_per_worker")
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert len(code["git_commit"]) == 40 and isinstance(code["git_dirty"], bool)
    assert code_version("no_such_module:fn")["git_commit"] is None


def _registered_state(registry: ModelRegistry, state: dict[str, Any], tmp_path: Path):
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return registry.commit(registry.storage.stage(path, "weights"), "weights", "state_dict")


def test_a_cold_load_maps_the_bytes_it_verified_even_if_storage_changes_after(
        registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: the stored file is swapped for other weights of the same size the moment its
    # checksum has been verified. Mapping the stored file then served the swapped weights as verified.
    original = {"w": torch.arange(256, dtype=torch.float32)}
    row = _registered_state(registry, original, tmp_path)
    target = stored(registry, row.artifact_key, "model.pt")
    (tmp_path / "other").mkdir()
    swapped = tmp_path / "other" / "model.pt"  # the same name: torch.save writes it into the archive
    torch.save({"w": -torch.arange(256, dtype=torch.float32)}, swapped)
    assert swapped.stat().st_size == target.stat().st_size
    read_chunks = registry.storage._read_chunks

    def then_swap(*args: Any, **kwargs: Any):
        yield from read_chunks(*args, **kwargs)  # hashed and checked in full
        target.write_bytes(swapped.read_bytes())

    monkeypatch.setattr(registry.storage, "_read_chunks", then_swap)
    payload, _ = hot_copy(registry, row, tmp_path / "scratch")
    loaded = from_hot_payload(payload, "weights", row.version, row.digest, tmp_path / "cache")
    assert torch.equal(loaded["w"], original["w"])
    assert not any((tmp_path / "scratch").glob("*"))  # the private copy is gone (in memory on Linux)


def test_a_cold_load_of_a_truncated_or_changed_file_is_a_clear_error(
        registry: ModelRegistry, tmp_path: Path) -> None:
    row = _registered_state(registry, {"w": torch.ones(1024)}, tmp_path)
    target = stored(registry, row.artifact_key, "model.pt")
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactCorruptError, match="size mismatch"):
        hot_copy(registry, row, tmp_path / "scratch")
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ArtifactCorruptError, match="sha256 mismatch"):
        hot_copy(registry, row, tmp_path / "scratch")
    assert not any((tmp_path / "scratch").glob("*"))


def test_without_memfd_the_private_copy_is_a_scratch_file_removed_after(
        registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr("os.memfd_create", raising=False)  # as on macOS
    state = {"w": torch.arange(64, dtype=torch.float32)}
    row = _registered_state(registry, state, tmp_path)
    payload, _ = hot_copy(registry, row, tmp_path / "scratch")
    loaded = from_hot_payload(payload, "weights", row.version, row.digest, tmp_path / "cache")
    assert torch.equal(loaded["w"], state["w"])
    assert (tmp_path / "scratch").is_dir() and not any((tmp_path / "scratch").iterdir())


def test_a_reference_written_by_the_factory_reads_back_as_the_same_version_or_alias() -> None:
    from factory.registry.refs import alias_ref, version_ref

    assert version_ref("nlp-regressor", 3) == "nlp-regressor:3"
    assert parse_ref(version_ref("nlp-regressor", 3)) == ModelRef("nlp-regressor", version=3)
    assert alias_ref("nlp", "production") == "nlp@production"
    assert parse_ref(alias_ref("nlp", "production")) == ModelRef("nlp", alias="production")
