"""The README's set-up commands are the ones CI runs: keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [l.strip() for l in (ROOT / ".ci/run").read_text().splitlines()]
    test_command = next(c for c in _readme_commands() if c.endswith("pytest"))
    assert test_command in ci_lines


def test_readme_install_commands_pin_the_cpu_torch():
    setup = [c for c in _readme_commands() if "pip install" in c]
    assert len(setup) >= 2
    assert all("torch==2.13.0" in c for c in setup)
    assert any(c.endswith("qtbench run --algo q_transformer --task drawer_open") for c in setup)
