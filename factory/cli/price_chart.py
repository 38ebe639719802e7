"""`factory price` for people: the price now and a compact terminal chart of the forecast."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from factory.prices.models import FeedStatus, Forecast, PriceNow

BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 8
MAX_COLUMNS = 72


def _utc(time_s: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(time_s, tz=UTC).strftime(fmt)


def price_text(price: PriceNow, forecast: Forecast, feed: FeedStatus, hours: float) -> str:
    """Three lines about now and the feed, then the forecast chart."""
    carbon = "" if price.carbon_g_per_kwh is None else f"   carbon {price.carbon_g_per_kwh:.0f} gCO2/kWh"
    freshness = "fresh" if not price.stale else f"STALE ({price.stale_reason})"
    if price.age_s is not None and (price.stale or feed.kind == "http"):
        freshness += f", age {price.age_s:.0f} s"
    lines = [
        f"Price now  {price.price_per_mwh:.2f} {price.unit}   (interval from "
        f"{_utc(price.interval_start_s)} UTC, {price.interval_s / 60:.0f} min){carbon}",
        f"Source     {price.source}: {freshness}",
    ]
    known = [p for p in forecast.points if p.known]
    horizon = ("all known (a tariff)" if forecast.known_until_s is None
               else f"known until {_utc(forecast.known_until_s)} UTC")
    rest = "" if len(known) == len(forecast.points) else "; the rest estimated"
    lines.append(f"Next {hours:g} h  {len(known)} of {len(forecast.points)} intervals {horizon}{rest}")
    return "\n".join(lines) + "\n\n" + forecast_chart(forecast)


def forecast_chart(forecast: Forecast, rows: int = CHART_ROWS) -> str:
    """Columns of block characters (one per interval, or the mean of several), axis and legend."""
    points = [p for p in forecast.points if p.price_per_mwh is not None]
    if not points:
        return "(no forecast: the feed has no history to estimate from yet)"
    group = math.ceil(len(points) / MAX_COLUMNS)
    columns = []
    for first in range(0, len(points), group):
        chunk = points[first:first + group]
        mean = sum(p.price_per_mwh for p in chunk) / len(chunk)  # type: ignore[misc]
        columns.append((mean, all(p.known for p in chunk)))
    low = min(value for value, _ in columns)
    high = max(value for value, _ in columns)
    span = (high - low) or 1.0
    eighths = [max(1, round((value - low) / span * rows * 8)) for value, _ in columns]
    label_width = max(len(f"{high:.2f}"), len(f"{low:.2f}"))
    body = []
    for row in range(rows, 0, -1):
        cells = "".join(BLOCKS[min(8, max(0, level - (row - 1) * 8))] for level in eighths)
        label = f"{high:.2f}" if row == rows else f"{low:.2f}" if row == 1 else ""
        body.append(f"{label:>{label_width}} {'┤' if label else '│'}{cells}")
    axis = "".join("─" if known else "┄" for _, known in columns)
    body.append(f"{'':>{label_width}} └{axis}")
    width = len(columns)
    step_s = forecast.interval_s * group
    label_len = len("01-01 00:00")
    ticks = [(0, points[0].start_s)]
    if width // 2 > label_len:  # a middle label only where it does not overwrite the first
        ticks.append((width // 2, points[0].start_s + width // 2 * step_s))
    tick_line = [" "] * (width + label_len)
    for column, time_s in ticks:
        tick_line[column:column + label_len] = _utc(time_s, "%m-%d %H:%M")
    body.append(f"{'':>{label_width}}  {''.join(tick_line).rstrip()}  (UTC)")
    per = f"{forecast.interval_s * group / 60:.0f} min per column"
    body.append(f"{'':>{label_width}}  ─ known  ┄ estimated   {forecast.unit}, {per}")
    return "\n".join(body)
