"""README's Layout section names every top-level entry of the repository, and only real ones."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def layout_lines() -> list[str]:
    """The lines of the Layout block that start with a path (not continuation lines)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line and not line[0].isspace()]


def layout_paths() -> list[str]:
    return [line.split()[0] for line in layout_lines()]


def test_layout_section_matches_the_tree():
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    named = layout_paths()
    assert [p for p in named if not (ROOT / p).exists()] == []
    top = {path.split("/")[0] + ("/" if "/" in path else "") for path in tracked.split()}
    top = {".ci/run" if t == ".ci/" else t for t in top} - {"README.md", ".gitignore"}
    assert sorted(top - set(named)) == []
    subpackages = {f"qtbench/{d.name}/" for d in (ROOT / "qtbench").iterdir() if (d / "__init__.py").exists()}
    assert sorted(subpackages - set(named)) == []


def test_layout_states_the_installed_name_of_each_mapped_folder():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    lines = {line.split()[0]: line for line in layout_lines()}
    for package, folder in package_dir.items():
        if package != folder:  # envs/ -> qtbench.envs, baselines/ -> qtbench.baselines
            assert f"-> {package} " in lines[f"{folder}/"]
