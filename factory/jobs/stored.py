"""A stored job's spec, typed: what `JobRow.spec` (a dict, as the store keeps it) was submitted as.

The store keeps the validated spec as JSON (`JobSpec.model_dump(mode="json")`), so it parses back into
the same model with its defaults: readers ask `stored_spec(job).num_workers`, never
`job.spec.get("num_workers", 1)`, which would repeat the default in every reader (and drift from it).

Invariants:
  * Parsing is remembered per job and spec (its id, its `spec_hash`, and its `runtime_env`, the one part
    a view masks): the live scheduler reads every active job's spec at every step, and specs never change
    after submission. The models are frozen, so sharing one is safe.
  * A spec stored by an older release that today's validators refuse (a rule added since) still reads:
    it is built without validation (`model_construct`, defaults filled in), as it was accepted then. One
    bad job must not stop the scheduler, which reads every job's spec. Only a spec without a known
    `kind` is a `JobSpecError` naming the job.
"""

from __future__ import annotations

from typing import Any

from factory.jobs.spec import JOB_KINDS, CommandJobSpec, JobSpec, JobSpecError, TuneSettings, parse_job_spec
from factory.store import JobRow

MAX_REMEMBERED = 8192
_remembered: dict[tuple[str, str, str], JobSpec] = {}


def stored_spec(job: JobRow) -> JobSpec:
    """The job's spec as the model it was validated as (`TrainJobSpec`, `TuneJobSpec`, `CommandJobSpec`)."""
    key = (job.job_id, job.spec_hash, repr(job.spec.get("runtime_env")))
    spec = _remembered.get(key)
    if spec is None:
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        spec = _remembered[key] = _parsed(job.spec, job.job_id)
    return spec


def train_loop_of(job: JobRow) -> str | None:
    """The import path of a train or tune job's loop; None for a command job."""
    spec = stored_spec(job)
    return None if isinstance(spec, CommandJobSpec) else spec.train_loop  # type: ignore[attr-defined]


def _parsed(data: dict[str, Any], job_id: str) -> JobSpec:
    try:
        return parse_job_spec(data, f"job {job_id}'s stored spec")
    except JobSpecError:
        kind = JOB_KINDS.get(str(data.get("kind")))
        if kind is None:
            raise
        fields = dict(data)
        if isinstance(fields.get("tune"), dict):
            fields["tune"] = TuneSettings.model_construct(**fields["tune"])
        return kind.model_construct(**fields)
