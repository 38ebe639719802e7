"""GPU and node telemetry: backends, sampling, energy, attribution, history, metrics.

Backends are NVML, simulated and host; the facility view sums the nodes.
The TelemetryActor (`actors/telemetry.py`) runs it on every node;
`FactoryClient.nodes()/gpus()/facility()/job_energy()` and the scheduler read it through
`factory.telemetry.sdk`.
"""

from factory.telemetry.models import FacilityView, GpuStatus, JobEnergy, NodeStatus

__all__ = ["FacilityView", "GpuStatus", "JobEnergy", "NodeStatus"]
