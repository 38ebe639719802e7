"""The factory's exception tree.

Every error a *user* can cause (bad config, no cluster, a store from a newer version) is a
`FactoryError` whose message is one line that names the file/field/address and the fix. The CLI
prints that line and exits with `exit_code`; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class FactoryError(Exception):
    """Base of all user-facing factory errors. Exit code 1: the operation failed."""

    exit_code = 1


class ConfigError(FactoryError):
    """A config file, field or environment override is invalid. Exit code 2: usage/config error."""

    exit_code = 2


class StoreError(FactoryError):
    """The durable state store cannot be opened, migrated or written."""


class AliasMovedError(StoreError):
    """A conditional alias move found the alias moved since the condition was read; nothing changed."""


class SchemaTooNewError(StoreError):
    """The store was written by a newer factory whose schema this version does not know."""


class ClusterError(FactoryError):
    """No Ray cluster can be reached, or the factory's actors are missing or unhealthy."""


def summary_line(error: object, last: bool = True) -> str:
    """One line of a (possibly multi-line) error message: the last by default.

    Ray puts its wrapper text first and the cause last; subprocess output ends with the reason.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if last else lines[0]


class TelemetryError(FactoryError):
    """A telemetry source (NVML, RAPL, the Ray state API) failed or is absent."""


class DeviceUnavailableError(TelemetryError):
    """The device library or driver cannot be used at all (e.g. NVML not installed, driver not loaded)."""


class DeviceError(TelemetryError):
    """One device failed a query (e.g. the GPU fell off the bus); the others keep being sampled."""


class DeviceNotSupportedError(TelemetryError):
    """The device lacks a feature (e.g. an energy counter); callers fall back, never fail."""


class PriceError(FactoryError):
    """The price or carbon feed cannot answer (no data yet, or a source that fails)."""


class PriceDataError(PriceError):
    """A price, carbon or tariff file is malformed; the message names the file and row. Exit code 2."""

    exit_code = 2


class SimulationInputError(FactoryError):
    """A job trace or simulation option is invalid; the message names the file, row and field. Exit code 2."""

    exit_code = 2
