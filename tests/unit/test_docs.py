"""The docs document the metric names other tools scrape: exactly the ones exported."""

from __future__ import annotations

import re
from pathlib import Path

from factory.jobs.metrics import JOB_METRICS
from factory.prices.metrics import PRICE_METRICS
from factory.telemetry.metrics import METRICS
from tests.support import REPO_ROOT


def documented_tables(path: Path) -> list[dict[str, tuple[str, tuple[str, ...]]]]:
    """Every `| metric | unit | tags |` table in the file at `path`: {name: (unit, tags)}."""
    text = path.read_text()
    tables = []
    for start in [i for i in range(len(text)) if text.startswith("| metric | unit | tags |", i)]:
        table = text[start:]
        table = table[: table.index("\n\n")] if "\n\n" in table else table
        rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \| ([^|]+) \|", table, flags=re.MULTILINE)
        tables.append({name: (unit.strip(), tuple(tag.strip() for tag in tags.split(",")
                                                  if tag.strip() != "-"))  # "-": no tags
                       for name, unit, tags in rows})
    return tables


def test_the_docs_metrics_tables_list_exactly_the_exported_metrics() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    found = {path.relative_to(REPO_ROOT).as_posix(): documented_tables(path) for path in pages}
    # One table on each page that documents metrics, and none elsewhere (no stale copy).
    assert {page: len(tables) for page, tables in found.items() if tables} == \
        {"docs/telemetry.md": 1, "docs/prices.md": 1, "docs/jobs.md": 1}
    assert found["docs/telemetry.md"][0] == {spec.name: (spec.unit, spec.tags) for spec in METRICS}
    assert found["docs/prices.md"][0] == {spec.name: (spec.unit, spec.tags) for spec in PRICE_METRICS}
    assert found["docs/jobs.md"][0] == {spec.name: (spec.unit, spec.tags) for spec in JOB_METRICS}
