"""Artifact storage of the model registry: the bytes of each model version, over `pyarrow.fs`.

Nomenclature:
  * base: the directory, within a filesystem, that holds every artifact (`registry.storage_uri`).
  * key: one artifact's directory relative to the base, `<model>/<uuid4 hex>`.
  * relpath: a file's POSIX path inside its artifact; the metadata maps each relpath to a `FileEntry`.
  * label: how error messages name the version, e.g. "model 'mnist' v3".

Invariants:
  * Keys are write-once: `stage` always writes under a fresh uuid4 key and nothing ever rewrites a
    key, so a crash mid-write leaves only an orphan directory that no metadata points at.
  * Checksums are computed while writing, from the one read of the source; nothing is re-read to
    compute them.
  * Storage knows nothing of versions or aliases: an artifact is visible to users only once the
    caller commits metadata naming its key. A staged artifact whose commit failed is `delete`d, and
    `orphans` lists the keys no metadata references.
  * Every read (`verify`, `download`, `read_bytes`) checks each file's size and sha256 against its
    metadata and raises `ArtifactCorruptError` on the first mismatch; a failed `download` leaves
    nothing at the destination.
  * Bytes are stored as given: pyarrow's default `compression="detect"` (which would gzip a file named
    `*.gz` again on write and inflate it on read) is always turned off.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.fs as pafs
from pydantic import BaseModel

from factory.errors import FactoryError, summary_line

CHUNK_BYTES = 8 * 1024 * 1024
# The job-name rule (`register_as` is checked by it at submission), so a name accepted there is stored.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
MODEL_NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter, digit or '_'"
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[0-9a-f]{32}$")
_URI_SCHEMES = ("file", "s3", "gs", "gcs", "mock")
_ACCEPTED_URIS = "a local path or a file://, s3://, gs:// or mock:// URI"


class ArtifactCorruptError(FactoryError):
    """A stored file of a version is missing or does not match its recorded size and sha256."""

    def __init__(self, label: str, relpath: str, problem: str) -> None:
        self.label = label
        self.relpath = relpath
        self.problem = problem
        super().__init__(
            f"{label}: file '{relpath}' {problem}; the version is not loaded -- register it again"
        )

    def __reduce__(self):  # keep the structured fields when pickled (e.g. across Ray)
        return (type(self), (self.label, self.relpath, self.problem))


class FileEntry(BaseModel):
    """What the metadata records of one stored file."""

    sha256: str
    size_bytes: int


class StagedArtifact(BaseModel):
    """An artifact written to storage but not yet referenced by any committed metadata."""

    key: str
    files: dict[str, FileEntry]
    digest: str
    size_bytes: int


def version_digest(files: dict[str, FileEntry]) -> str:
    r"""The sha256 of a whole version: over the sorted lines `f"{relpath}\0{sha256}\0{size_bytes}\n"`.

    It depends only on the content and file names, so equal artifacts on any backend share it.
    """
    digest = hashlib.sha256()
    for relpath in sorted(files):
        entry = files[relpath]
        digest.update(f"{relpath}\0{entry.sha256}\0{entry.size_bytes}\n".encode())
    return digest.hexdigest()


def check_model_name(model: str) -> None:
    """Raise a `FactoryError` unless `model` is usable as a model name and storage directory."""
    if not MODEL_NAME_RE.match(model):
        raise FactoryError(f"invalid model name {model!r}: use {MODEL_NAME_RULE}")


def _check_key(key: str) -> None:
    # Keys reach `delete` and path joins, so a malformed one (e.g. "" or "../x") must never pass.
    if not _KEY_RE.match(key):
        raise FactoryError(f"invalid artifact key {key!r}: expected '<model>/<32 hex digits>'")


def _check_relpath(relpath: str) -> None:
    parts = relpath.split("/")
    if relpath.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise FactoryError(f"invalid artifact file path {relpath!r}: expected a relative POSIX path")


def _short(sha256: str) -> str:
    return f"{sha256[:12]}…"


def _source_files(source: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relpath, local path) of every file of `source`, in sorted order."""
    if source.is_file():
        yield source.name, source
        return
    root = source.resolve()
    for directory, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in dirnames:
            if Path(directory, name).is_symlink():
                raise FactoryError(
                    f"source {source} contains a symlinked directory {Path(directory, name)}; "
                    "copy its contents in or register its target instead"
                )
        for name in sorted(filenames):
            path = Path(directory, name)
            if not path.is_file():
                raise FactoryError(f"source {source} contains {path}, which is not a regular file "
                                   "(a broken symlink, socket or device); remove it and register again")
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                # A link out of the tree would publish whatever it points at (a key, another model).
                raise FactoryError(f"source {source} contains {path}, a symlink to {path.resolve()} outside "
                                   "it; copy that file in or remove the link, and register again")
            yield path.relative_to(source).as_posix(), path


class ArtifactStorage:
    """Write-once, checksummed artifact directories under one base of a `pyarrow.fs` filesystem."""

    def __init__(self, uri: str) -> None:
        """Open the storage at `uri` (config field `registry.storage_uri`); a local base is created."""
        self.filesystem, self.base, self.uri = _resolve(uri)
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            self.filesystem.create_dir(self.base, recursive=True)

    @classmethod
    def from_filesystem(
        cls, filesystem: pafs.FileSystem, base: str, uri: str | None = None
    ) -> ArtifactStorage:
        """Use an existing filesystem (e.g. a `SubTreeFileSystem` or a test's mock) with `base` in it."""
        storage = cls.__new__(cls)
        storage.filesystem = filesystem
        storage.base = base.rstrip("/") or base
        storage.uri = uri or f"{filesystem.type_name}:{base}"
        return storage

    def stage(self, source: str | Path, model: str) -> StagedArtifact:
        """Copy the local file or directory `source` to a fresh key `<model>/<uuid4 hex>`.

        Each file is streamed in `CHUNK_BYTES` chunks, hashed while written; the source is read once.
        On an error the partial artifact is deleted; on a crash it stays an unreferenced orphan.
        """
        check_model_name(model)
        source = Path(source).expanduser()
        if not source.exists():
            raise FactoryError(f"cannot register {model!r}: source path {source} does not exist")
        key = f"{model}/{uuid.uuid4().hex}"
        files: dict[str, FileEntry] = {}
        try:
            for relpath, path in _source_files(source):
                files[relpath] = self._write(self._path(key, relpath), path)
        except BaseException:
            self.delete(key)
            raise
        if not files:
            self.delete(key)
            raise FactoryError(f"cannot register {model!r}: source directory {source} contains no files")
        return StagedArtifact(key=key, files=files, digest=version_digest(files),
                              size_bytes=sum(entry.size_bytes for entry in files.values()))

    def stage_stream(self, model: str, filename: str, write: Callable[[Any], None]) -> StagedArtifact:
        """Stage one file that `write(stream)` produces (e.g. `torch.save`), hashed on its way to storage.

        No local copy is made; the same guarantees as `stage` (fresh key, deleted on an error).
        """
        check_model_name(model)
        _check_relpath(filename)
        key = f"{model}/{uuid.uuid4().hex}"
        path = self._path(key, filename)
        try:
            self.filesystem.create_dir(posixpath.dirname(path), recursive=True)
            with self.filesystem.open_output_stream(path, compression=None) as out:
                writer = _HashingWriter(out)
                write(writer)
        except BaseException:
            self.delete(key)
            raise
        files = {filename: FileEntry(sha256=writer.sha256.hexdigest(), size_bytes=writer.size_bytes)}
        return StagedArtifact(key=key, files=files, digest=version_digest(files),
                              size_bytes=writer.size_bytes)

    @contextmanager
    def verified_copy(self, key: str, relpath: str, entry: FileEntry, label: str,
                      directory: Path) -> Iterator[Path]:
        """A private copy of one file, written from the very bytes that were hashed; removed on exit.

        For readers that map a file (`torch.load(mmap=True)`): mapping the stored file itself would load
        whatever it holds by then (verified once, changed after, is served as verified), and a file
        truncated while mapped kills the process with SIGBUS. On Linux the copy is an anonymous
        in-memory file (memfd: a memory copy, no disk write); elsewhere a file under `directory`. A
        mapping made inside the block outlives it. Raises `ArtifactCorruptError` (nothing left behind)
        if the stored file is missing, short, long or changed.
        """
        if hasattr(os, "memfd_create"):
            handle = os.memfd_create("factory-verified", os.MFD_CLOEXEC)  # a name of at most 249 bytes
            path, on_disk = Path(f"/proc/self/fd/{handle}"), False
        else:
            directory.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".verified-", dir=directory)
            path, on_disk = Path(name), True
        try:
            with os.fdopen(handle, "wb", closefd=False) as out:
                for chunk in self._read_chunks(key, relpath, entry, label):
                    out.write(chunk)
            yield path
        finally:
            os.close(handle)
            if on_disk:
                path.unlink(missing_ok=True)

    def verify(self, key: str, files: dict[str, FileEntry], label: str) -> None:
        """Re-read every file of artifact `key`; raise `ArtifactCorruptError` on the first bad one."""
        buffer = memoryview(bytearray(CHUNK_BYTES))
        for relpath, entry in sorted(files.items()):
            for _ in self._read_chunks(key, relpath, entry, label, reuse=buffer):
                pass

    def check_present(self, key: str, files: dict[str, FileEntry], label: str) -> None:
        """Check that every file of artifact `key` is in storage with its recorded size (no re-read).

        What a commit checks before it makes a staged artifact visible: cheap (metadata only), it
        catches a stage that did not finish; checksums are verified on every read.
        """
        _check_key(key)
        paths = {relpath: self._path(key, relpath) for relpath in sorted(files)}
        for relpath, info in zip(paths, self.filesystem.get_file_info(list(paths.values())), strict=True):
            if info.type != pafs.FileType.File:
                raise ArtifactCorruptError(
                    label, relpath, f"is missing from storage at {self.uri.rstrip('/')}/{key}/{relpath}")
            expected_bytes = files[relpath].size_bytes
            if info.size != expected_bytes:
                raise ArtifactCorruptError(label, relpath, "is incomplete in storage (size mismatch: "
                                           f"expected {expected_bytes} bytes, got {info.size} bytes)")

    def download(self, key: str, files: dict[str, FileEntry], destination: Path, label: str) -> Path:
        """Copy artifact `key` to the local directory `destination`, replacing what is there.

        Files land in a temporary sibling directory that is renamed into place only once every file
        checked out, so `destination` never holds a partial or corrupt copy.
        """
        destination = Path(destination).expanduser().absolute()
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.with_name(f".{destination.name}.partial-{uuid.uuid4().hex}")
        try:
            for relpath, entry in sorted(files.items()):
                local = staging.joinpath(*relpath.split("/"))
                local.parent.mkdir(parents=True, exist_ok=True)
                with open(local, "wb") as out:
                    for chunk in self._read_chunks(key, relpath, entry, label):
                        out.write(chunk)
            staging.mkdir(exist_ok=True)  # an artifact without files still downloads as a directory
            _replace(staging, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination

    def read_bytes(self, key: str, relpath: str, entry: FileEntry, label: str) -> bytes:
        """Return the verified content of one file of artifact `key`."""
        return b"".join(self._read_chunks(key, relpath, entry, label))

    def delete(self, key: str) -> None:
        """Remove the directory of artifact `key` with everything in it; absent is not an error."""
        _check_key(key)
        path = self._path(key)
        if self.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return
        try:
            self.filesystem.delete_dir(path)
        except FileNotFoundError:  # deleted concurrently
            pass

    def orphans(self, model: str, referenced: set[str]) -> list[str]:
        """Keys stored under `<base>/<model>/` that are not in `referenced`, sorted; nothing is deleted."""
        check_model_name(model)
        selector = pafs.FileSelector(self._path(model), allow_not_found=True)
        keys = (f"{model}/{posixpath.basename(info.path)}" for info in self.filesystem.get_file_info(selector)
                if info.type == pafs.FileType.Directory)
        return sorted(key for key in keys if key not in referenced)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    def _write(self, path: str, source: Path) -> FileEntry:
        # Object stores have no directories and ignore this; local and mock filesystems need it.
        self.filesystem.create_dir(posixpath.dirname(path), recursive=True)
        buffer = memoryview(bytearray(CHUNK_BYTES))  # one buffer for every chunk: no allocation per read
        with open(source, "rb") as src, self.filesystem.open_output_stream(path, compression=None) as out:
            writer = _HashingWriter(out)
            while count := src.readinto(buffer):
                writer.write(buffer[:count])
        return FileEntry(sha256=writer.sha256.hexdigest(), size_bytes=writer.size_bytes)

    def _read_chunks(self, key: str, relpath: str, entry: FileEntry, label: str,
                     reuse: memoryview | None = None) -> Iterator[bytes | memoryview]:
        """Yield the file's chunks, then raise `ArtifactCorruptError` if its size or sha256 is wrong.

        Callers must consume it to the end: the check runs after the last chunk. With `reuse`, every
        chunk is read into that one buffer (for callers that only look at each chunk once).
        """
        _check_key(key)
        _check_relpath(relpath)
        sha256 = hashlib.sha256()
        size_bytes = 0
        try:
            stream = self.filesystem.open_input_stream(self._path(key, relpath), compression=None)
        except FileNotFoundError:
            raise ArtifactCorruptError(
                label, relpath, f"is missing from storage at {self.uri.rstrip('/')}/{key}/{relpath}"
            ) from None
        with stream:
            while chunk := (stream.read(CHUNK_BYTES) if reuse is None else reuse[:stream.readinto(reuse)]):
                size_bytes += len(chunk)
                if size_bytes > entry.size_bytes:
                    break  # longer than recorded: stop reading a file that may be huge
                sha256.update(chunk)
                yield chunk
        if size_bytes != entry.size_bytes:
            got = f"{size_bytes}" if size_bytes < entry.size_bytes else f"over {entry.size_bytes}"
            raise ArtifactCorruptError(label, relpath, "is corrupted (size mismatch: "
                                       f"expected {entry.size_bytes} bytes, got {got} bytes)")
        if sha256.hexdigest() != entry.sha256:
            raise ArtifactCorruptError(
                label, relpath, f"is corrupted (sha256 mismatch: expected {_short(entry.sha256)}, "
                f"got {_short(sha256.hexdigest())})"
            )


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base within it, display URI) of `registry.storage_uri`."""
    if not uri.strip():
        raise FactoryError(f"registry.storage_uri is empty: use {_ACCEPTED_URIS}")
    if "://" not in uri:
        base = str(Path(uri).expanduser().resolve())
        return pafs.LocalFileSystem(), base, base
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in _URI_SCHEMES:
        raise FactoryError(
            f"registry.storage_uri {uri!r} has unsupported scheme {scheme!r}: use {_ACCEPTED_URIS}"
        )
    try:
        filesystem, base = pafs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowException, ValueError, OSError) as error:
        reason = summary_line(error, last=False)  # hdfs-like errors run to dozens of lines
        raise FactoryError(
            f"registry.storage_uri {uri!r} cannot be opened ({reason}): use {_ACCEPTED_URIS}"
        ) from None
    return filesystem, base, uri.rstrip("/")


def _replace(staging: Path, destination: Path) -> None:
    """Move the complete directory `staging` to `destination`, replacing whatever is there."""
    if destination.is_symlink() or destination.is_file():
        destination.unlink()
    elif destination.exists():
        # A directory cannot be renamed over a non-empty one: move the old copy aside first.
        old = destination.with_name(f".{destination.name}.old-{uuid.uuid4().hex}")
        destination.rename(old)
        staging.rename(destination)
        shutil.rmtree(old, ignore_errors=True)
        return
    staging.rename(destination)


class _HashingWriter:
    """A write-only stream that hashes and counts what it passes on to `out`."""

    def __init__(self, out: Any) -> None:
        self.out, self.sha256, self.size_bytes = out, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.out.write(data)
        count = memoryview(data).nbytes
        self.size_bytes += count
        return count

    def flush(self) -> None:
        """Nothing to flush: the output stream is closed by its owner."""
