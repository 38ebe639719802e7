"""Where a trained model came from, recorded when its job succeeds: the lineage of a version.

Everything here is read, never guessed: the job row and its accounting (from the state store), the
code's git commit (when the job's module lives in a git checkout), the dataset the spec names and
its fingerprint (sha256 of a local file or directory's contents, up to `FINGERPRINT_MAX_BYTES`).
A value that cannot be known is None, never a placeholder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from pathlib import Path
from typing import Any

from factory.jobs.masking import masked_spec
from factory.jobs.stored import run_result, schedule_of, stored_spec, submitted_lineage, train_loop_of
from factory.store import JobRow
from factory.version import __version__

FINGERPRINT_MAX_BYTES = 1 << 30
_CHUNK_BYTES = 8 << 20


def job_lineage(job: JobRow, parent: str | None = None) -> dict[str, Any]:
    """The lineage of the model `job` trained (`parent`: the resolved NAME:VERSION it was tuned from)."""
    accounting = job.accounting or {}
    runs = schedule_of(job).runs
    training_s = sum(max(0.0, end - start) for start, end, _ in runs) if runs else None
    return {
        "job_id": job.job_id,
        "job_name": job.name,
        "team": job.team,
        "kind": job.kind,
        "spec": masked_spec(job.spec),  # secrets in runtime_env.env_vars are named, not shown
        "spec_hash": job.spec_hash,
        # As of submission when the scheduler recorded it (the checkout may have moved on since).
        "code": submitted_lineage(job).code or code_version(train_loop_of(job)),
        "dataset": dataset_reference(stored_spec(job).dataset),
        "metrics": run_result(job).metrics,  # without the checkpoint path: bookkeeping, not a metric
        "training_time_s": training_s,
        "gpu_hours": accounting.get("gpu_hours"),
        "energy_kwh": accounting.get("energy_kwh"),
        "energy_source": accounting.get("energy_source"),
        "cost": accounting.get("cost"),
        "currency": accounting.get("currency"),
        "carbon_kg": accounting.get("carbon_kg"),
        "parent": parent,
        "factory_version": __version__,
    }


def code_version(entry_point: str | None) -> dict[str, Any]:
    """{module, git_commit, git_dirty} of a `module:function` entry point (None where unknown)."""
    module = (entry_point or "").partition(":")[0] or None
    result: dict[str, Any] = {"entry_point": entry_point, "git_commit": None, "git_dirty": None}
    if module is None:
        return result
    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages: user code may raise anything
    except Exception:  # noqa: BLE001 - an unknown code version is recorded as such, never fatal
        return result
    if spec is None or not spec.origin or not Path(spec.origin).exists():
        return result
    directory = Path(spec.origin).parent
    commit = _git(directory, "rev-parse", "HEAD")
    if commit:
        status = _git(directory, "status", "--porcelain", "--untracked-files=no")
        result.update(git_commit=commit, git_dirty=bool(status))
    return result


def dataset_reference(reference: str | None) -> dict[str, Any] | None:
    """{ref, fingerprint, size_bytes} of the dataset a spec names; the fingerprint only for local data."""
    if not reference:
        return None
    path = Path(reference).expanduser()
    if not path.exists():
        return {"ref": reference, "fingerprint": None, "size_bytes": None}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    size_bytes = sum(p.stat().st_size for p in files)
    if size_bytes > FINGERPRINT_MAX_BYTES:
        return {"ref": reference, "fingerprint": None, "size_bytes": size_bytes}
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    return {"ref": reference, "fingerprint": f"sha256:{digest.hexdigest()}", "size_bytes": size_bytes}


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
