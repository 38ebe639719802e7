"""Config models of the `prices` section: where the price and carbon series come from.

Relative paths are resolved against the working directory when the config is loaded (as
`state_dir` is), because the GridPriceActor reads them from another process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALLOWED_RESOLUTIONS_MIN = (5, 15, 60)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _allowed_resolution(value: int | None) -> int | None:
    if value is not None and value not in ALLOWED_RESOLUTIONS_MIN:
        raise ValueError(f"must be one of {', '.join(map(str, ALLOWED_RESOLUTIONS_MIN))}")
    return value


class TraceConfig(_Section):
    """A price series in CSV or Parquet files, replayed against the factory clock.

    Several files (say, quarters) form one series; they are ordered by their first timestamp and
    must not overlap.
    """

    paths: list[str] = Field(
        default_factory=list, description="Files or glob patterns (CSV or Parquet, by extension)."
    )
    timestamp_column: str = Field(
        "timestamp", description="ISO 8601 (with or without a UTC offset) or Unix seconds."
    )
    price_column: str | None = Field(
        "price_per_mwh", description="Price per MWh; negative prices are allowed."
    )
    carbon_column: str | None = Field(
        None, description="gCO2/kWh; unset: 'carbon_g_per_kwh' if the file has that column."
    )
    timezone: str = Field(
        "UTC", description="IANA zone of timestamps written without an offset (naive local time)."
    )
    skip_rows: int = Field(0, ge=0, description="Title lines above the CSV header.")
    timestamp_marks: Literal["start", "end"] = Field(
        "start", description="Whether a row's timestamp is its interval's beginning or its end."
    )
    resolution_min: int | None = Field(
        None, description="5, 15 or 60; unset: the most common step between rows."
    )
    local_time_dst: Literal["strict", "evened"] = Field(
        "strict", description="Naive local times: 'strict' follows the clock changes exactly; "
        "'evened' reads files with 24 rows every day (the nonexistent spring hour is dropped, the "
        "autumn hour taken once)."
    )
    gaps: Literal["fill", "error"] = Field(
        "fill", description="Missing intervals and blank cells: forward-fill and report, or fail."
    )
    shift_days: int = Field(
        0, description="Move the whole series by whole days (728 = 104 weeks lays 2022 on 2024, "
        "weekdays aligned)."
    )

    _allowed_resolution = field_validator("resolution_min")(_allowed_resolution)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. America/Chicago)") from None
        return value


class CarbonTraceConfig(TraceConfig):
    """A carbon-intensity series of its own (gCO2/kWh), e.g. EIA-930 hourly data."""

    price_column: None = None
    carbon_column: str | None = Field("carbon_g_per_kwh", description="gCO2/kWh column.")


class HttpFeedConfig(_Section):
    """A JSON endpoint polled for prices (a market or utility API)."""

    url: str | None = Field(None, description="http(s) URL answering JSON.")
    poll_interval_s: float = Field(300.0, gt=0, description="Real seconds between polls.")
    timeout_s: float = Field(10.0, gt=0, description="A poll that takes longer has failed.")
    max_backoff_s: float = Field(
        3600.0, gt=0, description="Longest wait between retries of a failing feed (doubling)."
    )
    items_path: str = Field(
        "", description="Dotted path to the list of price records ('' : the document itself)."
    )
    timestamp_path: str = Field("timestamp", description="Dotted path to a record's timestamp.")
    price_path: str = Field("price_per_mwh", description="Dotted path to a record's price per MWh.")
    carbon_path: str | None = Field(None, description="Dotted path to a record's gCO2/kWh.")
    resolution_min: int = Field(60, description="Length of each record's interval: 5, 15 or 60.")
    timestamp_marks: Literal["start", "end"] = "start"
    auth_header: str = Field("Authorization", description="Header that carries the credential.")
    auth_env: str | None = Field(
        None, description="Environment variable (on the head node) whose value is sent verbatim in "
        "auth_header; never logged."
    )
    history_days: float = Field(14.0, gt=0, description="Days of fetched prices kept.")

    _allowed_resolution = field_validator("resolution_min")(_allowed_resolution)

    @field_validator("url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        return _http_url(value)


class GridEventFeedConfig(_Section):
    """A JSON endpoint polled for demand-response events (a utility's or aggregator's API).

    It answers a list of events (at `items_path`), each an object with `start`, `end` (ISO 8601 with an
    offset), `target_kw` or `reduce_pct`, and optionally `id`, `announced` and `source`: the columns
    of `grid_events_path`. The price feed's rules hold: a poll that takes longer than `timeout_s` has
    failed, a failing feed is retried after a delay that doubles up to `max_backoff_s`, and the events
    already read are kept.
    """

    url: str = Field(description="http(s) URL answering JSON.")
    poll_interval_s: float = Field(60.0, gt=0, description="Real seconds between polls.")
    timeout_s: float = Field(10.0, gt=0, description="A poll that takes longer has failed.")
    max_backoff_s: float = Field(
        3600.0, gt=0, description="Longest wait between retries of a failing feed (doubling)."
    )
    items_path: str = Field("", description="Dotted path to the list of events ('' : the document itself).")
    auth_header: str = Field("Authorization", description="Header that carries the credential.")
    auth_env: str | None = Field(
        None, description="Environment variable (on the head node) whose value is sent verbatim in "
        "auth_header; never logged."
    )

    @field_validator("url")
    @classmethod
    def _an_http_url(cls, value: str) -> str:
        return _http_url(value)  # type: ignore[return-value]


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class PricesConfig(_Section):
    """The electricity price and carbon feed (GridPriceActor)."""

    source: Literal["tariff", "trace", "http"] = Field(
        "tariff", description="tariff: a time-of-use schedule; trace: replay files; http: poll a URL."
    )
    currency: str = Field("USD", description="Currency of every price (prices are per MWh).")
    known_horizon_h: float = Field(
        24.0, ge=0, description="How far ahead a trace's prices are known (day-ahead market: 24); "
        "beyond it the forecast is an estimate."
    )
    forecast_days: int = Field(
        7, ge=1, description="Past days whose same interval makes the estimate beyond the horizon."
    )
    tick_s: float = Field(
        1.0, gt=0, description="Real seconds between the actor's rounds (due polls, metrics)."
    )
    tariff_path: Path | None = Field(
        None, description="Time-of-use tariff YAML; unset: the built-in illustrative tariff."
    )
    grid_events_path: Path | None = Field(
        None, description="A CSV of demand-response events (start, end, target_kw or reduce_pct, id), read "
        "again whenever it changes; each event is added once (`factory grid events`)."
    )

    @field_validator("tariff_path", "grid_events_path")
    @classmethod
    def _a_path_the_os_accepts(cls, value: Path | None) -> Path | None:
        if value is not None and "\x00" in str(value):  # pathlib would fail later with a raw ValueError
            raise ValueError("a path cannot contain a NUL character")
        return value
    grid_events_http: GridEventFeedConfig | None = Field(
        None, description="An HTTP feed of demand-response events, polled like prices.http; each event is "
        "added once (`factory grid events`)."
    )
    trace: TraceConfig = TraceConfig()
    http: HttpFeedConfig = HttpFeedConfig()
    carbon: CarbonTraceConfig | None = Field(
        None, description="A carbon series of its own; unset: the carbon of the price source."
    )

    @model_validator(mode="after")
    def _source_is_configured(self) -> PricesConfig:
        if self.source == "trace" and not self.trace.paths:
            raise ValueError("source 'trace' needs trace.paths (the CSV or Parquet files to replay)")
        if self.source == "http" and not self.http.url:
            raise ValueError("source 'http' needs http.url (the JSON endpoint to poll)")
        if self.carbon is not None and not self.carbon.paths:
            raise ValueError("carbon needs paths (the carbon-intensity files)")
        return self

    def resolve_paths(self, cwd: Path) -> None:
        """Make every file path absolute against `cwd` (the actor runs elsewhere)."""
        if self.tariff_path is not None and not self.tariff_path.is_absolute():
            self.tariff_path = (cwd / self.tariff_path).resolve()
        if self.grid_events_path is not None and not self.grid_events_path.is_absolute():
            self.grid_events_path = (cwd / self.grid_events_path).resolve()
        for trace in (self.trace, self.carbon):
            if trace is not None:
                trace.paths = [p if Path(p).is_absolute() else str((cwd / p).resolve())
                               for p in trace.paths]
