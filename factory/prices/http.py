"""`HttpPriceProvider`: prices (and carbon) polled from a JSON endpoint (a market or utility API).

Nomenclature:
  record       -- one element of the list at `items_path`: one interval of `resolution_min` minutes.
  dotted path  -- keys joined by '.' ("data.prices"; a digit indexes a list); '' is the node itself.
  cache        -- every fetched interval by its start (Unix s, UTC); the newest fetch wins (markets
                  revise prices).

Invariants:
  * An answer is parsed completely before anything is merged: any failure raises `PriceError` with
    one line and leaves the last good data as it was.
  * The credential (the value of `auth_env`) goes only in `auth_header`, only to the configured URL
    (not to a redirect's target), and never into a message: messages name the variable, never quote
    a response body, and are scrubbed of the value in case a server echoes it in a field.
  * Readers see one immutable snapshot (cache, series, notes), replaced by a single assignment once
    fully built, so `price` may run on any thread while `refresh` runs on another.
  * The cache holds the latest `history_days` of intervals. The series run from its first interval
    to its last; intervals without a record are forward-filled and reported in `notes`. If the first
    interval has no carbon there is no carbon series, rather than one starting on a made-up value.
"""

from __future__ import annotations

import json
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any, ClassVar

import numpy as np

from factory.errors import ConfigError, PriceError
from factory.price_config import HttpFeedConfig
from factory.prices.provider import PriceProvider
from factory.prices.series import PRICE_LIMIT_PER_MWH, IntervalSeries, utc_label

_DAY_S = 86400
_MAX_BODY_BYTES = 64 * 2**20  # far above any price API's answer; stops a runaway body filling memory
_MILLISECONDS_FROM = 1e11  # Unix seconds reach 1e11 only in the year 5138: larger numbers are ms
MISSING = object()
SECRET_WORD_MIN = 8  # a word of a credential this long is masked on its own ('Bearer' is not)

Record = tuple[float, float, float | None]
"""(start_s, price_per_mwh, carbon_g_per_kwh or None): one cached interval."""


@dataclass(frozen=True)
class _Snapshot:
    """Everything readers see, built together: the cache and the series and notes made from it."""

    cache: dict[int, tuple[float, float | None]]
    price: IntervalSeries | None = None
    carbon: IntervalSeries | None = None
    notes: tuple[str, ...] = ()


class HttpPriceProvider(PriceProvider):
    """Polls `config.url` for price records and keeps what it fetched (see the module docstring).

    Args:
        config: The `prices.http` section; `max_backoff_s` is the caller's business.
        env: Where `config.auth_env` is looked up, at every refresh; default `os.environ`.

    Raises:
        ConfigError: `config.url` is not set.
    """

    kind: ClassVar[str] = "http"

    def __init__(self, config: HttpFeedConfig, env: Mapping[str, str] | None = None) -> None:
        if not config.url:
            raise ConfigError("prices.http.url is not set; give the http(s) URL of the price feed")
        self._config = config
        self._url: str = config.url
        self._env = os.environ if env is None else env
        self._resolution_s = config.resolution_min * 60
        self.poll_interval_s = config.poll_interval_s
        self._write_lock = threading.Lock()  # serialises writers; readers take `_snapshot` as it is
        self._snapshot = _Snapshot(cache={})

    @property
    def description(self) -> str:
        """'http feed <url>', the query string (which may hold a key) left out."""
        return f"http feed {url_description(self._url)}"

    def refresh(self) -> None:
        """GET the URL and merge its records into the cache.

        Raises:
            PriceError: One line naming the feed and what failed; the last good data is kept.
        """
        try:
            secret = credential(self._env, self._config.auth_env, "prices.http.auth_env")
        except PriceError as exc:
            raise PriceError(f"{self.description}: {exc}") from None
        try:
            fetched = self._parse(self._fetch(secret))
        except PriceError as exc:
            message = " ".join(f"{self.description}: {exc}".split())  # one line, whatever came in
            raise PriceError(scrubbed(message, secret)) from None
        except (ValueError, UnicodeError) as exc:  # http.client refusing the header value, mostly:
            # its message quotes the value, so only the variable is named.
            raise PriceError(f"{self.description}: {type(exc).__name__} building the request; is "
                             f"{self._config.auth_env} a valid {self._config.auth_header} header value "
                             "(one line, no trailing newline)?") from None
        with self._write_lock:
            self._snapshot = self._build({**self._snapshot.cache, **fetched})

    def restore(self, records: Iterable[Record]) -> None:
        """Replace the cache with `records` (from `cached_records`, say before a restart); no I/O.

        Raises:
            PriceError: A record's start is off the resolution grid (was `resolution_min` changed?).
        """
        cache: dict[int, tuple[float, float | None]] = {}
        for start_s, price, carbon in records:
            if start_s % self._resolution_s:
                raise PriceError(f"{self.description}: saved interval {utc_label(start_s)} is not on the "
                                 f"{self._config.resolution_min}-min grid (resolution_min changed?)")
            cache[int(start_s)] = (float(price), None if carbon is None else float(carbon))
        with self._write_lock:
            self._snapshot = self._build(cache)

    def cached_records(self) -> list[Record]:
        """Every cached interval in time order, as `restore` takes them."""
        return [(float(start_s), *values) for start_s, values in sorted(self._snapshot.cache.items())]

    def price(self, start_s: float, end_s: float) -> IntervalSeries | None:
        """The fetched price intervals (per MWh) overlapping the window; None before any fetch."""
        series = self._snapshot.price
        return None if series is None else series.window(start_s, end_s)

    def carbon(self, start_s: float, end_s: float) -> IntervalSeries | None:
        """The fetched carbon intervals (gCO2/kWh) overlapping the window; None if there are none."""
        series = self._snapshot.carbon
        return None if series is None else series.window(start_s, end_s)

    def span(self) -> tuple[float, float] | None:
        """[first start, last end) of the cached price series; None before any data."""
        series = self._snapshot.price
        return None if series is None else (series.start_s, series.end_s)

    def known_until_s(self, now_s: float) -> float:
        """The start of the last fetched interval: what the feed has published is known.

        Not infinite, so that the forecast estimates what lies beyond it from the past days.
        """
        series = self._snapshot.price
        return -math.inf if series is None else series.end_s - series.interval_s

    def notes(self) -> list[str]:
        """The repairs of the latest build (forward-filled intervals, a missing carbon series)."""
        return list(self._snapshot.notes)

    def _fetch(self, secret: str | None) -> Any:
        return get_json(self._url, self._config.timeout_s, self._config.auth_header, secret)

    def _parse(self, document: Any) -> dict[int, tuple[float, float | None]]:
        """The records of one answer by interval start; any bad record fails the whole answer."""
        config = self._config
        items = walk(document, config.items_path)
        if items is MISSING:
            raise PriceError(f"the answer has no '{config.items_path}' (prices.http.items_path)")
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise PriceError(f"'{config.items_path or 'the answer'}' is {_shown(items)}, "
                             "not a list of records (prices.http.items_path)")
        shift_s = self._resolution_s if config.timestamp_marks == "end" else 0
        fetched: dict[int, tuple[float, float | None]] = {}
        for i, record in enumerate(items):
            if not isinstance(record, dict):
                raise PriceError(f"record {i} is {_shown(record)}, not an object")
            start_s = _timestamp_s(_field(record, i, config.timestamp_path), i, config.timestamp_path)
            start_s -= shift_s
            if start_s % self._resolution_s:
                raise PriceError(f"record {i}: interval start {utc_label(start_s)} is not on the "
                                 f"{config.resolution_min}-min grid (prices.http.resolution_min)")
            if int(start_s) in fetched:
                raise PriceError(f"record {i}: a second record for the interval at {utc_label(start_s)}")
            price = _number(_field(record, i, config.price_path), i, config.price_path)
            if abs(price) > PRICE_LIMIT_PER_MWH:
                raise PriceError(f"record {i}: '{config.price_path}' is {price:g}, beyond "
                                 f"+-{PRICE_LIMIT_PER_MWH:,.0f} per MWh; check the units")
            carbon = None
            if config.carbon_path:
                raw = walk(record, config.carbon_path)
                if raw is not MISSING and raw is not None:
                    carbon = _number(raw, i, config.carbon_path)
            fetched[int(start_s)] = (price, carbon)
        self._refuse_far_outliers(fetched)
        return fetched

    def _refuse_far_outliers(self, fetched: dict[int, tuple[float, float | None]]) -> None:
        """A record more than `history_days` after the others is a typo; it would push them out."""
        starts = np.array(list(fetched), dtype=np.int64)  # in record order
        order = np.argsort(starts, kind="stable")
        steps = np.diff(starts[order])
        far = np.flatnonzero(steps > self._config.history_days * _DAY_S)
        if far.size:
            index = int(order[far[0] + 1])
            raise PriceError(f"record {index}: {utc_label(starts[index])} is {steps[far[0]] / _DAY_S:.0f} "
                             "days after the record before it; mistyped? (beyond prices.http.history_days)")

    def _build(self, cache: dict[int, tuple[float, float | None]]) -> _Snapshot:
        """Trim `cache` to `history_days` and lay it on the grid, forward-filling what is missing."""
        if not cache:
            return _Snapshot(cache={})
        step_s = self._resolution_s
        newest_s = max(cache)
        oldest_kept_s = newest_s + step_s - self._config.history_days * _DAY_S
        cache = {start_s: cache[start_s] for start_s in sorted(cache) if start_s >= oldest_kept_s}
        first_s = next(iter(cache))
        positions = (np.fromiter(cache, dtype=np.int64) - first_s) // step_s
        prices = np.full((newest_s - first_s) // step_s + 1, np.nan)
        prices[positions] = [price for price, _ in cache.values()]
        carbons = np.full(len(prices), np.nan)
        carbons[positions] = [np.nan if carbon is None else carbon for _, carbon in cache.values()]
        notes = []
        missing = np.flatnonzero(np.isnan(prices))
        if missing.size:
            notes.append(f"http feed: {missing.size} intervals without a record forward-filled, "
                         f"first {utc_label(first_s + int(missing[0]) * step_s)}")
        carbon = None
        if self._config.carbon_path:
            if math.isnan(carbons[0]):
                notes.append(f"http feed: no carbon series: the first interval ({utc_label(first_s)}) "
                             f"has no '{self._config.carbon_path}'")
            else:
                holes = np.flatnonzero(np.isnan(carbons))
                if holes.size:
                    notes.append(f"http feed: {holes.size} carbon intervals forward-filled, "
                                 f"first {utc_label(first_s + int(holes[0]) * step_s)}")
                carbon = IntervalSeries(float(first_s), float(step_s), _forward_fill(carbons))
        price = IntervalSeries(float(first_s), float(step_s), _forward_fill(prices))
        return _Snapshot(cache=cache, price=price, carbon=carbon, notes=tuple(notes))


def walk(node: Any, path: str) -> Any:
    """The value at dotted `path` below `node`, or `MISSING`."""
    for key in path.split(".") if path else ():
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return MISSING
    return node


def _field(record: dict, i: int, path: str) -> Any:
    value = walk(record, path)
    if value is MISSING:
        raise PriceError(f"record {i} has no '{path}'")
    return value


def _number(raw: Any, i: int, path: str) -> float:
    """A finite float; numbers written as strings ("42.5") count, as many APIs quote them."""
    value = math.nan
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except (ValueError, OverflowError):
            pass
    if not math.isfinite(value):
        raise PriceError(f"record {i}: '{path}' is not a number ({_shown(raw)})")
    return value


def _timestamp_s(raw: Any, i: int, path: str) -> float:
    """Unix seconds of an ISO 8601 string (no offset: UTC) or of a number (Unix seconds)."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if 0 <= raw < _MILLISECONDS_FROM:  # false for NaN too; no int grows past float's range here
            return float(raw)
        raise PriceError(f"record {i}: '{path}' {_shown(raw)} is out of range for Unix seconds "
                         "(milliseconds?)")
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            pass
        else:
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise PriceError(f"record {i}: '{path}' is not a time ({_shown(raw)}); want ISO 8601, "
                     "e.g. 2024-07-01T13:00:00Z, or Unix seconds")


def get_json(url: str, timeout_s: float, auth_header: str = "Authorization",
             secret: str | None = None) -> Any:
    """GET `url` and parse its JSON answer; `PriceError` (one line, no body quoted) if that fails.

    The credential `secret` goes only in `auth_header`, only to `url` (not to a redirect's target).
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if secret is not None:
        # Unredirected: a redirect to another host must not carry the credential along.
        request.add_unredirected_header(auth_header, secret)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(_MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()  # the body is never read: a server may echo the request (credential) in it
        raise PriceError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise PriceError(_network_failure(exc.reason, timeout_s)) from None
    except (OSError, HTTPException) as exc:  # raised while reading the answer
        raise PriceError(_network_failure(exc, timeout_s)) from None
    if len(body) > _MAX_BODY_BYTES:
        raise PriceError(f"answer larger than {_MAX_BODY_BYTES >> 20} MiB")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise PriceError(f"not JSON (line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise PriceError("not JSON (not UTF-8 text)") from None


def credential(env: Mapping[str, str], variable: str | None, field: str) -> str | None:
    """The value of the environment variable a feed's `field` names (None: it names none); PriceError if
    it is unset or empty. The value is never put in a message."""
    if not variable:
        return None
    secret = env.get(variable)
    if not secret:
        raise PriceError(f"environment variable {variable} ({field}) is not set or empty")
    return secret


def scrubbed(message: str, secret: str | None) -> str:
    """`message` with the credential masked: whole, and each word of it ('Bearer <token>' leaks no token)
    long enough to be a secret rather than a word like 'Bearer'."""
    if not secret:
        return message
    for part in sorted({secret, *(word for word in secret.split() if len(word) >= SECRET_WORD_MIN)},
                       key=len, reverse=True):
        message = message.replace(part, "***")
    return message


def url_description(url: str) -> str:
    """`url` fit to show: no user:password@, the query string (which may hold a key) left out."""
    base, query_mark, _ = url.partition("?")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}{'?…' if query_mark else ''}"


def _network_failure(reason: object, timeout_s: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionError | HTTPException):  # reset, closed early, garbled status line
        return f"connection broken ({type(reason).__name__})"
    return f"cannot connect: {getattr(reason, 'strerror', None) or reason}"


def _forward_fill(grid: np.ndarray) -> np.ndarray:
    """`grid` with each NaN replaced by the last value before it (`grid[0]` is not NaN)."""
    last = np.where(np.isnan(grid), 0, np.arange(len(grid)))
    np.maximum.accumulate(last, out=last)
    return grid[last]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

