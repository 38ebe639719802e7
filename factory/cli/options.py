"""Flags shared by several commands, and the one place that loads the config for the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from factory.config import FactoryConfig, load_config

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_path", type=str, default=None,
    help="Factory config YAML (default: $FACTORY_CONFIG, else configs/factory.yaml, else defaults).",
)
address_option = click.option(
    "--address", default=None,
    help="Ray cluster address (default: ray.address in the config, RAY_ADDRESS, or a local cluster).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def load(config_path: str | None) -> FactoryConfig:
    """The effective config for a command; `ConfigError` (exit 2) on any problem."""
    return load_config(config_path)
