"""A stored job's spec, typed: what `JobRow.spec` (a dict, as the store keeps it) was submitted as.

The store keeps the validated spec as JSON (`JobSpec.model_dump(mode="json")`), so it parses back into
the same model with its defaults: readers ask `stored_spec(job).num_workers`, never
`job.spec.get("num_workers", 1)`, which would repeat the default in every reader (and drift from it).

Invariants:
  * Parsing is remembered per spec text: the live scheduler reads every active job's spec at every
    step, and specs never change after submission. The models are frozen, so sharing one is safe.
  * A stored spec that no longer parses (written by a release whose spec had other fields) is a
    `JobSpecError` naming the job, not a pydantic traceback.
"""

from __future__ import annotations

import functools
import json

from factory.jobs.spec import CommandJobSpec, JobSpec, parse_job_spec
from factory.store import JobRow


def stored_spec(job: JobRow) -> JobSpec:
    """The job's spec as the model it was validated as (`TrainJobSpec`, `TuneJobSpec`, `CommandJobSpec`)."""
    return _parsed(json.dumps(job.spec, sort_keys=True), job.job_id)


def train_loop_of(job: JobRow) -> str | None:
    """The import path of a train or tune job's loop; None for a command job."""
    spec = stored_spec(job)
    return None if isinstance(spec, CommandJobSpec) else spec.train_loop  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=8192)
def _parsed(spec_json: str, job_id: str) -> JobSpec:
    return parse_job_spec(json.loads(spec_json), f"job {job_id}'s stored spec")
