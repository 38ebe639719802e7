"""Live training jobs: the job spec (`factory.jobs.spec`) and Ray Tune search spaces (`search_space`).

Nomenclature and invariants are in `factory.jobs.spec`'s docstring.
"""

from __future__ import annotations

from factory.jobs.search_space import SAMPLER_TAGS, check_search_space, to_tune_space
from factory.jobs.spec import (
    JOB_KINDS,
    CommandJobSpec,
    JobKind,
    JobSpec,
    JobSpecError,
    TrainJobSpec,
    TuneJobSpec,
    TuneSettings,
    load_callable,
    load_job_spec,
    parse_job_spec,
    resolve_deadline,
    spec_hash,
)
from factory.jobs.submission import ClusterCapacity, validate_for_submission

__all__ = [
    "JOB_KINDS",
    "SAMPLER_TAGS",
    "ClusterCapacity",
    "CommandJobSpec",
    "JobKind",
    "JobSpec",
    "JobSpecError",
    "TrainJobSpec",
    "TuneJobSpec",
    "TuneSettings",
    "check_search_space",
    "load_callable",
    "load_job_spec",
    "parse_job_spec",
    "resolve_deadline",
    "spec_hash",
    "to_tune_space",
    "validate_for_submission",
]
