"""A stored job, typed: its spec as submitted, the scheduler's facts, what its run reported, its lineage.

`JobRow` keeps these as the JSON the store holds (`spec`, `schedule`, `progress`, `schedule["lineage"]`);
the readers here are the one place that knows their shape: `stored_spec`, `schedule_of`, `run_result`,
`submitted_lineage`.

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class RunResult(BaseModel):
    """What a job's run reported last (its `progress`): where its checkpoint is, and its metrics."""

    model_config = ConfigDict(frozen=True)

    checkpoint_path: str | None = Field(None, description="The run's latest checkpoint (a directory).")
    step: int | None = Field(None, description="The step counter it reported, if it has one.")
    metrics: dict[str, Any] = Field(default_factory=dict,
                                    description="Everything else it reported (loss, epoch, trials, ...).")


def run_result(job: JobRow) -> RunResult:
    """The job's run result, typed; an empty one before its run reports."""
    metrics = {key: value for key, value in job.progress.items() if key != "checkpoint_path"}
    checkpoint = job.progress.get("checkpoint_path")
    step = job.progress.get("step")
    return RunResult(checkpoint_path=str(checkpoint) if checkpoint else None,
                     step=int(step) if isinstance(step, int | float) and not isinstance(step, bool) else None,
                     metrics=metrics)


class SubmittedLineage(BaseModel):
    """What a model's lineage must say as of submission (recorded by the scheduler then)."""

    model_config = ConfigDict(frozen=True)

    parent: str | None = Field(None, description="The parent model as resolved then (NAME:VERSION).")
    code: dict[str, Any] | None = Field(None, description="The code's version then (git commit, ...).")


def submitted_lineage(job: JobRow) -> SubmittedLineage:
    """The lineage facts recorded at submission (none for a job that registers no model)."""
    recorded = schedule_of(job).lineage or {}
    return SubmittedLineage(parent=recorded.get("parent"), code=recorded.get("code"))


class JobSchedule(BaseModel):
    """The scheduler's own facts about a job (`JobRow.schedule`), typed; the controller writes them.

    Nomenclature:
      admitted, at_risk  -- the policy has judged the job's deadline (at risk: reported infeasible, with
                            what admission said in `infeasible`).
      run_s              -- run time of the job's finished runs (factory seconds on its GPUs).
      started_s          -- start of the current run, while RUNNING or PAUSING.
      placement          -- ((node, gpus), ...) of the current run, while RUNNING or PAUSING.
      runner_confirmed   -- a runner took the current run (its start returned, or it reported the run).
                            Until then the run is only written ahead: a scheduler that stopped between
                            the write and the hand-over hands it over again, as the same attempt.
      runs               -- ((start_s, end_s, gpus), ...) of the finished runs (its consumption profile).
      latest_safe_start_s -- while WAITING: the latest start that still meets its deadline given every
                            job admitted before it (the price-aware policy's reservation plan).
      pausing_s          -- when the policy asked the current run to pause.
      pauses_s           -- factory times at which the policy paused the job (the pause cap counts them).
      resuming_from_step -- while a resumed run has not yet reported past the step it resumed from: that
                            step (None: the job reports no step counter; its first report counts).
      resume_overheads_s -- the measured overhead of each earlier resume: factory seconds from the
                            resume's start until the scheduler first saw the run report past the step it
                            was paused at (an upper bound). Their mean is the job's learnt overhead.
      lineage            -- what the model's lineage must say as of submission (`submitted_lineage`).
    Facts this model does not name are kept (`extra`), so an older or newer writer's survive a read.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    admitted: bool = False
    at_risk: bool = False
    infeasible: str | None = None
    run_s: float = 0.0
    started_s: float | None = None
    placement: tuple[tuple[str, int], ...] = ()
    runner_confirmed: bool = False
    runs: tuple[tuple[float, float, int], ...] = ()
    latest_safe_start_s: float | None = None
    pausing_s: float | None = None
    pauses_s: tuple[float, ...] = ()
    resuming_from_step: int | None = None
    resume_overheads_s: tuple[float, ...] = ()
    lineage: dict[str, Any] = Field(default_factory=dict)


def schedule_of(job: JobRow) -> JobSchedule:
    """The job's schedule facts, typed.

    Facts an older release wrote in another shape are read as far as they go (`model_construct`): the
    scheduler reads every active job's facts at every step, and one odd row must not stop it.
    """
    try:
        return JobSchedule.model_validate(job.schedule)
    except ValidationError:
        return JobSchedule.model_construct(**job.schedule)
