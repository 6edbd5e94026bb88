import platform
import subprocess
import sys

import pytest

from qtbench.cli import main
from qtbench.cpu_kernels import PORTABLE_ISA, SWITCH, pin_portable_kernels
from qtbench.errors import QtbenchError


def test_x86_kernels_are_capped_at_avx2_by_default():
    environ = {}
    pin_portable_kernels(environ, machine="x86_64")
    assert environ == PORTABLE_ISA


def test_native_kernels_other_machines_and_set_variables_are_left_alone():
    environ = {SWITCH: "native"}
    pin_portable_kernels(environ, machine="x86_64")
    assert environ == {SWITCH: "native"}
    environ = {}
    pin_portable_kernels(environ, machine="aarch64")
    assert environ == {}
    environ = {"ATEN_CPU_CAPABILITY": "default"}
    pin_portable_kernels(environ, machine="x86_64")
    assert environ["ATEN_CPU_CAPABILITY"] == "default" and environ["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"


def test_an_unknown_mode_is_refused_with_the_fix(monkeypatch, capsys):
    with pytest.raises(QtbenchError, match="fix: unset it"):
        pin_portable_kernels({SWITCH: "fast"}, machine="x86_64")
    monkeypatch.setenv(SWITCH, "fast")
    assert main(["env", "list"]) == 2
    assert f"{SWITCH}='fast' is not one of portable, native" in capsys.readouterr().err


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_torch_runs_avx2_kernels_once_pinned():
    code = ("import os; from qtbench.cpu_kernels import pin_portable_kernels, kernels_description; "
            "[os.environ.pop(k, None) for k in ('ATEN_CPU_CAPABILITY', 'QTBENCH_CPU_KERNELS')]; "
            "pin_portable_kernels(); print(kernels_description())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() in ("AVX2 kernels (portable)", "DEFAULT kernels")  # DEFAULT: a CPU without AVX2
