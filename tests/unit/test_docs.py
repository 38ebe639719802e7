"""The README documents the metric names other tools scrape: exactly the ones exported."""

from __future__ import annotations

import re

from factory.jobs.metrics import JOB_METRICS
from factory.prices.metrics import PRICE_METRICS
from factory.telemetry.metrics import METRICS
from tests.support import REPO_ROOT


def documented_tables() -> list[dict[str, tuple[str, tuple[str, ...]]]]:
    """Every `| metric | unit | tags |` table in the README: {name: (unit, tags)}."""
    readme = (REPO_ROOT / "README.md").read_text()
    tables = []
    for start in [i for i in range(len(readme)) if readme.startswith("| metric | unit | tags |", i)]:
        table = readme[start:]
        table = table[: table.index("\n\n")]
        rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \| ([^|]+) \|", table, flags=re.MULTILINE)
        tables.append({name: (unit.strip(), tuple(tag.strip() for tag in tags.split(",")
                                                  if tag.strip() != "-"))  # "-": no tags
                       for name, unit, tags in rows})
    return tables


def test_the_readme_metrics_tables_list_exactly_the_exported_metrics() -> None:
    telemetry, prices, jobs = documented_tables()
    assert telemetry == {spec.name: (spec.unit, spec.tags) for spec in METRICS}
    assert prices == {spec.name: (spec.unit, spec.tags) for spec in PRICE_METRICS}
    assert jobs == {spec.name: (spec.unit, spec.tags) for spec in JOB_METRICS}
