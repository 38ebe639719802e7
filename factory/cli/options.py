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


def connect(config_path: str | None, address: str | None) -> Any:
    """The SDK client for a command (imported late: `factory --help` needs no Ray)."""
    import factory.client

    return factory.client.connect(address, config=load(config_path))


def cli_user() -> str:
    """Who acts, for the audit log: `cli:<OS user>`."""
    from factory.client import who

    return who("cli")


def factory_time(time_s: float | None) -> str | None:
    """A factory time as `YYYY-MM-DD HH:MM` (UTC), or None."""
    from factory.prices.series import utc_label

    return None if time_s is None else utc_label(time_s).removesuffix(" UTC")
