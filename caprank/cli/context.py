"""What every CLI command shares: the resolved configuration from the global flags."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from caprank.config import CaprankConfig, ResolvedConfig, resolve


@dataclass
class CliState:
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    _resolved: ResolvedConfig | None = None

    def resolved(self) -> ResolvedConfig:
        if self._resolved is None:
            self._resolved = resolve(self.config_file, overrides=self.overrides)
        return self._resolved

    def config(self) -> CaprankConfig:
        return self.resolved().config


pass_state = click.make_pass_decorator(CliState)
