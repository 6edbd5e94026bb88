"""The instruction set of torch's CPU kernels: AVX2 on every x86 machine, so a run gives the
same bits on AVX2 and AVX512 machines of one CPU vendor.

torch picks its matrix-product and element-wise kernels by the CPU's widest instructions
(ATen's dispatch, MKL, oneDNN). AVX512 kernels add floating-point numbers in another order
than AVX2 ones, so the same float32 training drifts apart bit by bit between machine kinds:
drawer_open's collection policy, trained on one thread with the same seed, got other weights
on an AVX512 EPYC (sha256:11b6783dc377) than on an AVX2 EPYC (sha256:ca7505b7e750), and so
other failures and another mixed dataset. Capped at AVX2 (the three variables below, read by
torch when it first runs a kernel), the AVX512 machine reproduced the AVX2 machine's weights
and every dataset hash bit for bit, at about the same speed (collection policy 255 s against
240 s uncapped). Datasets, searches and sweeps made in different sittings then agree exactly.

The cap does not make vendors agree: MKL picks its code paths by vendor too. On an Intel
Xeon (AVX512, capped), BC's drawer_open seed-2 training loss left the AMD EPYC run's at the
first logged step (4.52700532913208 against 4.527005319595337 at step 50; its greedy
evaluation still scored the 300 episodes identically), and drawer_open's collection policy
collected other failures (content hash 211e0bd7 against 329ed470). No setting tried on the
Intel machine gave the AMD run's step-50 loss and gradient norm together (MKL_CBWR AVX2,
COMPATIBLE or SSE4_2, MKL_ENABLE_INSTRUCTIONS SSE4_2 or AVX, native kernels). Dataset
manifests record the machine, and ``qtbench reproduce`` names it and where the losses drift.

``QTBENCH_CPU_KERNELS=native`` leaves torch its own choice (the widest kernels, and bfloat16
in hardware where the CPU has it, see ``nets.amp_field``); a variable already set in the
environment is left as it is.
"""

from __future__ import annotations

import os
import platform
from typing import MutableMapping

from qtbench.errors import QtbenchError

SWITCH = "QTBENCH_CPU_KERNELS"  # environment variable: "portable" (default) or "native"
MODES = ("portable", "native")
# The variables that cap torch's x86 kernels at AVX2: ATen's own dispatch, MKL (BLAS), oneDNN.
PORTABLE_ISA = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
X86 = ("x86_64", "amd64", "i686", "x86")


def pin_portable_kernels(environ: MutableMapping[str, str] = os.environ, machine: str | None = None) -> None:
    """Cap torch's CPU kernels at AVX2 on x86 unless ``QTBENCH_CPU_KERNELS=native``. Call it
    before torch runs its first kernel (the ``qtbench`` command does, first thing); worker
    processes inherit the environment."""
    mode = environ.get(SWITCH, "portable")
    if mode not in MODES:
        raise QtbenchError(f"{SWITCH}={mode!r} is not one of {', '.join(MODES)}",
                           f"unset it (portable AVX2 kernels, the default) or set {SWITCH}=native")
    if mode == "portable" and (machine or platform.machine()).lower() in X86:
        for name, value in PORTABLE_ISA.items():
            environ.setdefault(name, value)


def kernels_description() -> str:
    """The instruction set torch's CPU kernels run, and why, for the machine line."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    pinned = os.environ.get("ATEN_CPU_CAPABILITY") == PORTABLE_ISA["ATEN_CPU_CAPABILITY"]
    return f"{capability} kernels" + (" (portable)" if pinned and capability == "AVX2" else "")
