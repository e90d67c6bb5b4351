"""The pod sandbox `make e2e` runs each step in, and `python -m serving`'s own flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from caprank.sandbox import POD_SANDBOX_ENV, enter_pod_sandbox

ROOT = Path(__file__).resolve().parent.parent


def test_each_step_gets_a_new_empty_directory_as_cwd_and_home(tmp_path):
    before = Path.cwd()
    try:
        assert enter_pod_sandbox({}) is None and Path.cwd() == before
        env = {POD_SANDBOX_ENV: str(tmp_path / "pods")}
        first = enter_pod_sandbox(env)
        second = enter_pod_sandbox(env)
        assert first != second and Path.cwd() == second
        assert first.parent == second.parent == tmp_path / "pods"
        assert env["HOME"] == str(second) and not any(second.iterdir())
    finally:
        os.chdir(before)


def test_serving_takes_a_config_file_past_kserves_own_argv_parse(tmp_path):
    """KServe parses sys.argv when it is imported: `--config` used to be taken for its
    `--configure_logging` and the server did not start."""
    config = tmp_path / "run.yaml"
    config.write_text("serving:\n  default_top_k: 7\n", encoding="utf-8")
    code = (
        "import sys; from serving.__main__ import parser; from caprank.config import load_config; "
        "a = parser.parse_args(sys.argv[1:]); "
        "print(load_config(a.config_file).serving.default_top_k)"
    )
    argv = [sys.executable, "-c", code, "--config_file", str(config), "--http_port", "1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "7"
