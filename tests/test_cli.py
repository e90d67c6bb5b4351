"""The `caprank` command: help lists subcommands, config show reports sources."""

from __future__ import annotations

from click.testing import CliRunner

from caprank.cli import cli, main


def test_help_lists_subcommands():
    out = CliRunner().invoke(cli, ["--help"]).output
    assert "config" in out


def test_config_show_sources():
    res = CliRunner().invoke(cli, ["--set", "training.lr=0.002", "config", "show"], env={})
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if line.startswith("training.lr "))
    assert "0.002" in line and "--set training.lr" in line


def test_config_error_exit_code(capsys):
    assert main(["--set", "training.lr=-1", "config", "show"]) == 2
    assert "training.lr" in capsys.readouterr().err
