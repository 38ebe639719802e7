from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from factory.errors import FactoryError
from factory.registry.storage import (
    ArtifactCorruptError,
    ArtifactStorage,
    FileEntry,
    StagedArtifact,
    version_digest,
)

LABEL = "model 'mnist' v3"
BACKENDS = ["local", "subtree", "mock"]


def _mock_storage() -> ArtifactStorage:
    # Every FileSystem.from_uri("mock://") is a new, empty in-memory filesystem: keep this one instance.
    try:
        return ArtifactStorage("mock://")
    except FactoryError:
        if not hasattr(pafs, "_MockFileSystem"):
            pytest.skip("this pyarrow has neither mock:// URIs nor pyarrow.fs._MockFileSystem")
        return ArtifactStorage.from_filesystem(pafs._MockFileSystem(), "", uri="mock://")


def _storage(backend: str, root: Path) -> ArtifactStorage:
    if backend == "local":
        return ArtifactStorage(str(root / "store"))
    if backend == "subtree":
        (root / "subtree").mkdir()
        subtree = pafs.SubTreeFileSystem(str(root / "subtree"), pafs.LocalFileSystem())
        return ArtifactStorage.from_filesystem(subtree, "registry", uri="subtree://registry")
    return _mock_storage()


@pytest.fixture(params=BACKENDS)
def storage(request, tmp_path: Path) -> ArtifactStorage:
    return _storage(request.param, tmp_path)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A model directory with nested files, an empty file and a `.gz` that must be stored as is."""
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 3}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (root / "sub" / "deeper" / "empty.txt").write_bytes(b"")
    (root / "tokenizer.gz").write_bytes(b"not really gzip, must not be recompressed")
    return root


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stored_path(storage: ArtifactStorage, staged: StagedArtifact, relpath: str) -> str:
    return storage._path(staged.key, relpath)


def _flip_byte(storage: ArtifactStorage, path: str, offset: int = 0) -> None:
    with storage.filesystem.open_input_stream(path, compression=None) as stream:
        data = bytearray(stream.read())
    data[offset] ^= 0xFF
    with storage.filesystem.open_output_stream(path, compression=None) as out:
        out.write(bytes(data))


def test_directory_round_trip(storage: ArtifactStorage, source: Path, tmp_path: Path) -> None:
    expected = _local_files(source)
    staged = storage.stage(source, "mnist")

    assert set(staged.files) == set(expected)
    for relpath, content in expected.items():
        assert staged.files[relpath] == FileEntry(sha256=hashlib.sha256(content).hexdigest(),
                                                  size_bytes=len(content))
    assert staged.size_bytes == sum(len(c) for c in expected.values())
    assert staged.digest == version_digest(staged.files)
    assert staged.key.startswith("mnist/")

    storage.verify(staged.key, staged.files, LABEL)
    destination = storage.download(staged.key, staged.files, tmp_path / "out" / "mnist-v3", LABEL)
    assert _local_files(destination) == expected
    for relpath, content in expected.items():
        assert storage.read_bytes(staged.key, relpath, staged.files[relpath], LABEL) == content

    # pyarrow's default compression="detect" would gzip a *.gz file again; the stored bytes are the source's.
    with storage.filesystem.open_input_stream(_stored_path(storage, staged, "tokenizer.gz"),
                                              compression=None) as stream:
        assert stream.read() == expected["tokenizer.gz"]


def test_single_file_keeps_its_name(storage: ArtifactStorage, tmp_path: Path) -> None:
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"\x00weights\xff" * 1000)

    staged = storage.stage(model_file, "mnist")

    assert list(staged.files) == ["model.pt"]
    destination = storage.download(staged.key, staged.files, tmp_path / "out", LABEL)
    assert (destination / "model.pt").read_bytes() == model_file.read_bytes()


def test_digest_is_the_same_on_every_backend(source: Path, tmp_path: Path) -> None:
    staged = []
    for backend in BACKENDS:
        (tmp_path / backend).mkdir()
        staged.append(_storage(backend, tmp_path / backend).stage(source, "mnist"))

    assert len({s.digest for s in staged}) == 1
    assert all(s.files == staged[0].files for s in staged)


def test_flipped_byte_is_caught_on_every_read(storage: ArtifactStorage, source: Path, tmp_path: Path) -> None:
    staged = storage.stage(source, "mnist")
    _flip_byte(storage, _stored_path(storage, staged, "sub/weights.bin"), offset=1234)
    entry = staged.files["sub/weights.bin"]

    with pytest.raises(ArtifactCorruptError, match=r"model 'mnist' v3: file 'sub/weights.bin' is corrupted "
                       r"\(sha256 mismatch: expected [0-9a-f]{12}…, got [0-9a-f]{12}…\)") as raised:
        storage.verify(staged.key, staged.files, LABEL)
    assert "register it again" in str(raised.value) and "\n" not in str(raised.value)

    out = tmp_path / "out"
    with pytest.raises(ArtifactCorruptError, match="sub/weights.bin"):
        storage.download(staged.key, staged.files, out / "mnist-v3", LABEL)
    assert list(out.iterdir()) == []  # no destination, no leftover temporary directory

    with pytest.raises(ArtifactCorruptError, match="sub/weights.bin"):
        storage.read_bytes(staged.key, "sub/weights.bin", entry, LABEL)


def test_failed_download_keeps_the_previous_copy(storage: ArtifactStorage, source: Path,
                                                 tmp_path: Path) -> None:
    staged = storage.stage(source, "mnist")
    destination = storage.download(staged.key, staged.files, tmp_path / "out", LABEL)
    _flip_byte(storage, _stored_path(storage, staged, "config.json"))

    with pytest.raises(ArtifactCorruptError):
        storage.download(staged.key, staged.files, destination, LABEL)
    assert _local_files(destination) == _local_files(source)


def test_download_replaces_an_existing_destination(storage: ArtifactStorage, source: Path,
                                                   tmp_path: Path) -> None:
    destination = tmp_path / "downloads" / "mnist"
    destination.mkdir(parents=True)
    (destination / "stale.txt").write_text("from an older version")
    staged = storage.stage(source, "mnist")

    storage.download(staged.key, staged.files, destination, LABEL)

    assert _local_files(destination) == _local_files(source)
    assert list(destination.parent.iterdir()) == [destination]  # nothing set aside is left


def test_truncated_or_missing_file(storage: ArtifactStorage, source: Path) -> None:
    staged = storage.stage(source, "mnist")
    path = _stored_path(storage, staged, "config.json")
    with storage.filesystem.open_output_stream(path, compression=None) as out:
        out.write(b"{")
    with pytest.raises(ArtifactCorruptError, match=r"size mismatch: expected 13 bytes, got 1 bytes"):
        storage.verify(staged.key, staged.files, LABEL)

    storage.filesystem.delete_file(path)
    with pytest.raises(ArtifactCorruptError) as raised:
        storage.verify(staged.key, staged.files, LABEL)
    assert str(raised.value) == (
        f"model 'mnist' v3: file 'config.json' is missing from storage at {storage.uri}/{staged.key}/"
        "config.json; the version is not loaded -- register it again"
    )


def test_corrupt_error_survives_pickling() -> None:
    error = ArtifactCorruptError(LABEL, "model.pt", "is corrupted (sha256 mismatch)")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.relpath == "model.pt"


def test_every_stage_gets_a_fresh_key(storage: ArtifactStorage, source: Path) -> None:
    first, second = storage.stage(source, "mnist"), storage.stage(source, "mnist")
    assert first.key != second.key
    assert first.digest == second.digest


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "a/b", "../up", "x" * 129])
def test_bad_model_name(storage: ArtifactStorage, source: Path, name: str) -> None:
    with pytest.raises(FactoryError, match="invalid model name") as raised:
        storage.stage(source, name)
    assert repr(name) in str(raised.value) and "\n" not in str(raised.value)


def test_missing_or_empty_source(storage: ArtifactStorage, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FactoryError, match="does not exist") as raised:
        storage.stage(missing, "mnist")
    assert str(missing) in str(raised.value) and "\n" not in str(raised.value)

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FactoryError, match="contains no files"):
        storage.stage(tmp_path / "empty", "mnist")
    assert storage.orphans("mnist", set()) == []


def test_a_symlink_out_of_the_tree_is_refused_one_inside_is_followed(storage: ArtifactStorage,
                                                                      tmp_path: Path) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00\x01")
    (model / "sub" / "same.bin").symlink_to(model / "weights.bin")  # inside the tree: its bytes
    staged = storage.stage(model, "mnist")
    assert sorted(staged.files) == ["sub/same.bin", "weights.bin"]

    (model / "sub" / "key").symlink_to(secret)
    with pytest.raises(FactoryError, match="a symlink to .*id_rsa outside it") as raised:
        storage.stage(model, "mnist")
    assert "\n" not in str(raised.value)
    assert storage.orphans("mnist", {staged.key}) == []  # nothing of the refused stage is left


def test_twenty_megabytes_stream_across_chunks(tmp_path: Path) -> None:
    storage = ArtifactStorage(str(tmp_path / "store"))
    content = os.urandom(20 * 1024 * 1024 + 7)
    (tmp_path / "big.bin").write_bytes(content)

    staged = storage.stage(tmp_path / "big.bin", "big")

    assert staged.files["big.bin"] == FileEntry(sha256=hashlib.sha256(content).hexdigest(),
                                                size_bytes=len(content))
    destination = storage.download(staged.key, staged.files, tmp_path / "out", "model 'big' v1")
    assert hashlib.sha256((destination / "big.bin").read_bytes()).digest() == hashlib.sha256(content).digest()

    last_byte = len(content) - 1  # in the third 8 MiB chunk
    _flip_byte(storage, _stored_path(storage, staged, "big.bin"), offset=last_byte)
    with pytest.raises(ArtifactCorruptError, match="sha256 mismatch"):
        storage.verify(staged.key, staged.files, "model 'big' v1")


def test_orphans_lists_only_unreferenced_keys(storage: ArtifactStorage, source: Path) -> None:
    kept, orphan_a, orphan_b = (storage.stage(source, "mnist").key for _ in range(3))
    other = storage.stage(source, "mnist-large").key

    assert storage.orphans("mnist", {kept}) == sorted([orphan_a, orphan_b])
    assert storage.orphans("mnist-large", set()) == [other]
    assert storage.orphans("never-registered", set()) == []


def test_delete_removes_the_artifact_and_is_idempotent(storage: ArtifactStorage, source: Path) -> None:
    staged = storage.stage(source, "mnist")
    storage.delete(staged.key)
    storage.delete(staged.key)

    assert storage.orphans("mnist", set()) == []
    with pytest.raises(ArtifactCorruptError, match="is missing"):
        storage.verify(staged.key, staged.files, LABEL)
    with pytest.raises(FactoryError, match="invalid artifact key"):
        storage.delete("")  # never the whole base


def test_local_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = ArtifactStorage("artifacts")
    assert relative.base == str(tmp_path / "artifacts") and (tmp_path / "artifacts").is_dir()

    file_uri = ArtifactStorage(f"file://{tmp_path / 'by-uri'}")
    assert isinstance(file_uri.filesystem, pafs.LocalFileSystem)
    assert file_uri.base == str(tmp_path / "by-uri") and (tmp_path / "by-uri").is_dir()


@pytest.mark.parametrize("uri", ["", "ftp://host/x", "hdfs://namenode/x", "file://relative/x"])
def test_invalid_uri(uri: str) -> None:
    with pytest.raises(FactoryError, match="registry.storage_uri") as raised:
        ArtifactStorage(uri)
    message = str(raised.value)
    assert "\n" not in message and "s3://" in message
    assert uri in message
