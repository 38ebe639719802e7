"""The README documents the metric names other tools scrape: exactly the ones exported."""

from __future__ import annotations

import re

from factory.telemetry.metrics import METRICS
from tests.support import REPO_ROOT


def test_the_readme_metrics_table_lists_exactly_the_exported_metrics() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("| metric | unit | tags |"):]
    table = table[: table.index("\n\n")]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \| ([^|]+) \|", table, flags=re.MULTILINE)
    documented = {name: (unit.strip(), tuple(tag.strip() for tag in tags.split(",")))
                  for name, unit, tags in rows}
    exported = {spec.name: (spec.unit, spec.tags) for spec in METRICS}
    assert documented == exported
