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


def test_serve_execs_the_serving_entry_point_with_its_flags(tmp_path, monkeypatch):
    """`caprank serve` is `python -m serving` with the global flags passed on."""
    from serving.__main__ import parser

    calls = []
    monkeypatch.setattr("os.execv", lambda path, argv: calls.append(argv))
    res = CliRunner().invoke(
        cli, ["--set", "serving.port=9123", "serve", "--model-dir", str(tmp_path)], env={}
    )
    assert res.exit_code == 0, res.output
    (argv,) = calls
    assert argv[1:3] == ["-m", "serving"]
    args = parser.parse_args(argv[3:])
    assert (args.http_port, args.model_dir, args.model_name) == (9123, str(tmp_path), "caprank")
    assert args.overrides == ["serving.port=9123"] and not args.enable_grpc
    CliRunner().invoke(cli, ["serve", "--model-ref", "7", "--port", "8081"], env={})
    args = parser.parse_args(calls[1][3:])
    assert args.http_port == 8081 and args.model_dir is None
    assert args.overrides == ["serving.model_ref=7"]
