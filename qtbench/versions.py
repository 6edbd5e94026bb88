"""Which versions of qtbench and the packages that determine its data are installed: recorded
in every dataset's manifest, and compared with them when a dataset is read."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Packages whose version changes the generated episodes (MuJoCo's physics above all; torch
# trains the collection policy whose failures the datasets hold).
DATA_PACKAGES = ("qtbench", "minari", "mujoco", "gymnasium", "numpy", "torch")


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def package_versions() -> dict[str, str]:
    """Versions that determine the generated data (for the manifest); "unknown" when absent."""
    out = {"python": platform.python_version()}
    for name in DATA_PACKAGES:
        out[name] = installed_version(name) or "unknown"
    return out


def code_version() -> str:
    """qtbench version and git commit of this checkout (when it is one), for metadata; "plus
    uncommitted changes" when tracked files differ from that commit."""
    qtbench_version = installed_version("qtbench") or "unknown"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(commit and git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    suffix = f" (git {commit}{' plus uncommitted changes' if dirty else ''})" if commit else ""
    return f"qtbench {qtbench_version}{suffix}"
