"""The node itself: CPU utilisation and memory (psutil), CPU package energy from RAPL.

RAPL lives under `/sys/class/powercap/intel-rapl:N/energy_uj` (one file per CPU package; AMD
exposes the same interface). The counters wrap at `max_energy_range_uj`, which `read()` corrects.
On many systems they are readable by root only; then `cpu_energy_counter_j` is None and
`rapl_error` says why.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil

from factory.telemetry.models import MIB, HostReading

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # packages only; subzones (core, dram) are inside


class RaplZone:
    """One CPU package's energy counter, unwrapped into a monotonic total (J)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._range_uj = int((path / "max_energy_range_uj").read_text())
        self._last_uj = self._read_uj()
        self._total_uj = 0

    def _read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())

    def energy_j(self) -> float:
        """Energy since this zone was opened, in J."""
        now_uj = self._read_uj()
        delta = now_uj - self._last_uj
        if delta < 0:  # the counter wrapped
            delta += self._range_uj
        self._total_uj += delta
        self._last_uj = now_uj
        return self._total_uj / 1e6


class HostBackend:
    """CPU, memory and (where readable) RAPL energy of this node."""

    def __init__(self, powercap_root: Path = POWERCAP_ROOT) -> None:
        self.rapl_error: str | None = None
        self._zones: list[RaplZone] = []
        try:
            paths = sorted(p for p in powercap_root.iterdir() if _PACKAGE_ZONE.match(p.name))
            self._zones = [RaplZone(path) for path in paths]
            if not self._zones:
                self.rapl_error = f"no RAPL package zones under {powercap_root}"
        except OSError as exc:  # absent (VMs, macOS) or root-only (most kernels since 2020)
            self.rapl_error = f"RAPL unreadable: {exc.strerror or exc} ({getattr(exc, 'filename', '')})"
            self._zones = []
        psutil.cpu_percent(interval=None)  # primes the counter: the first real read covers an interval

    @property
    def has_rapl(self) -> bool:
        """CPU package energy is measured on this node."""
        return bool(self._zones)

    def read(self) -> HostReading:
        """CPU utilisation since the previous read, memory now, package energy so far."""
        memory = psutil.virtual_memory()
        energy_j = None
        if self._zones:
            try:
                energy_j = sum(zone.energy_j() for zone in self._zones)
            except OSError as exc:
                self.rapl_error = f"RAPL read failed: {exc}"
                self._zones = []
        return HostReading(
            cpu_utilization_pct=psutil.cpu_percent(interval=None),
            cpu_count=psutil.cpu_count() or 1,
            memory_used_mib=(memory.total - memory.available) / MIB,
            memory_total_mib=memory.total / MIB,
            cpu_energy_counter_j=energy_j,
        )
