"""Numerics modes: which kernels a run may use, so that its bits are a property of the code.

On the CPU, three libraries choose their kernels by processor, and a training run amplifies the
last-bit differences between those kernels into differences the size of a seed change:

- ATen's vectorised CPU kernels (``ATEN_CPU_CAPABILITY``: AVX2 or AVX-512),
- oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``),
- MKL's BLAS and FFT (its code branch, which also differs between Intel and AMD processors;
  ``MKL_CBWR``, "conditional numerical reproducibility").

The ``portable`` mode pins all three to what every x86-64 processor with AVX2 runs alike (ATen
and oneDNN at AVX2, MKL's ``COMPATIBLE`` branch), with deterministic algorithms and full-precision
float32 matmuls, so that one arm, seed, thread count and torch build give the same bits on any
such machine (docs/criteria.md, "Portable numerics"). ``native`` lets each library pick the
fastest kernels for this processor. ``auto`` (the default) is ``portable`` where it can be
guaranteed (x86-64 with AVX2, CPU runs) and ``native`` elsewhere, with a warning.

Each library reads its setting once, at its first kernel: :func:`pin` must run before any torch
computation in the process. The pytest plugin pins at start-up, before conftests are imported;
:func:`apply` (called by ``run_arm``) pins too when nothing has run yet, and then checks what
each library actually chose, so a mode that was asked for and cannot be guaranteed is refused
(:class:`NumericsError`) instead of recorded falsely.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

PORTABLE, NATIVE, AUTO = "portable", "native", "auto"
MODES = (AUTO, PORTABLE, NATIVE)
#: Environment variable that carries the requested mode to child processes (xdist workers,
#: submitit jobs) and to ``run_arm`` when it is not given.
MODE_ENV = "STABILITYKIT_NUMERICS"

#: What the portable mode sets in the environment (read by each library at its first kernel).
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
}
_ATEN = "AVX2"
_ONEDNN = "Intel AVX2"
_MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3"}
_MKL_BRANCHES |= {7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512"}
_MKL_COMPATIBLE = 3
_MKL_BRANCH_QUERY = 1  # MKL_CBWR_BRANCH: ask for the branch alone


class NumericsError(RuntimeError):
    """A numerics mode that was asked for and cannot be guaranteed in this process."""


def check_mode(mode: Any, field: str = "numerics") -> str:
    """``mode`` if it is one of :data:`MODES`, else ``ValueError`` naming ``field``."""
    if mode not in MODES:
        raise ValueError(f"{field}: got {mode!r}; allowed: one of {', '.join(MODES)}")
    return mode


def requested_mode(mode: str | None = None) -> str:
    """``mode``, else the mode in :data:`MODE_ENV`, else ``auto``."""
    if mode is None:
        mode = os.environ.get(MODE_ENV) or AUTO
        return check_mode(mode, f"environment variable {MODE_ENV}")
    return check_mode(mode)


def pin(mode: str = AUTO) -> None:
    """Set the environment for ``mode`` in this process and the processes it starts. Call it
    before the first torch computation; it does not import torch. ``native`` and non-x86
    machines leave the libraries' own choice alone. A conflicting setting already in the
    environment (say ``ATEN_CPU_CAPABILITY=avx512``) under an explicit ``portable`` is an
    error."""
    check_mode(mode)
    os.environ[MODE_ENV] = mode
    if mode == NATIVE or not _x86():
        return
    for key, value in PORTABLE_ENV.items():
        have = os.environ.get(key)
        if have is not None and have.upper() != value.upper():
            if mode == PORTABLE:
                raise NumericsError(
                    f"numerics 'portable' sets {key}={value}, but the environment has "
                    f"{key}={have}: unset it, or use numerics 'native'"
                )
            return  # auto: the user chose kernels by hand; apply() records native
        os.environ[key] = value


def expected_mode(mode: str | None = None, device: str = "cpu") -> str:
    """The mode a CPU run asked for ``mode`` (:func:`requested_mode`) records where nothing
    prevents it: ``native`` when asked, on a GPU or off x86-64, else ``portable``."""
    asked = requested_mode(mode)
    if asked == NATIVE or not device.startswith("cpu") or not _x86():
        return NATIVE
    return PORTABLE


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.cache
def _mkl() -> Any:
    """MKL's service functions inside libtorch (None where this torch build has no MKL)."""
    import torch

    if not torch.backends.mkl.is_available():
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        get, set_ = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_set
    except (OSError, AttributeError):
        return False  # MKL is there but cannot be asked: the branch is unknown
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    set_.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
    return get, set_


def mkl_branch(set_compatible: bool = False) -> str:
    """MKL's code branch (``COMPATIBLE``, ``AUTO``, ...), ``absent`` without MKL, ``unknown``
    when it cannot be asked. ``set_compatible``: choose ``COMPATIBLE`` first (only possible
    before MKL's first call)."""
    mkl = _mkl()
    if mkl is None:
        return "absent"
    if mkl is False:
        return "unknown"
    get, set_ = mkl
    if set_compatible:
        set_(_MKL_COMPATIBLE)  # refused once MKL has run: get() then tells
    return _MKL_BRANCHES.get(get(_MKL_BRANCH_QUERY), f"branch {get(_MKL_BRANCH_QUERY)}")


@functools.cache
def onednn_isa() -> str:
    """The instruction set oneDNN runs (its verbose header), ``not used`` where torch does not
    use oneDNN, ``unknown`` when it printed none. Runs one small convolution, once per
    process."""
    import torch

    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return "not used"
    fd = 1  # oneDNN prints to the C stdout (under pytest, sys.stdout is another file)
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                conv = torch.nn.Conv2d(3, 8, 3)
                conv(torch.zeros(2, 3, 16, 16)).sum().backward()
        finally:
            libc.fflush(None)
            os.dup2(saved, fd)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    for line in text.splitlines():
        if ",info,cpu,isa:" in line:
            return line.split(",info,cpu,isa:", 1)[1].strip()
    return "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _device_name(device: str) -> str | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return None


def _portable_problems(state: dict[str, Any]) -> list[str]:
    problems = []
    if state["aten_capability"] != _ATEN:
        problems.append(
            f"ATen runs {state['aten_capability']} kernels, not {_ATEN} (a torch computation "
            "ran before the mode was set, or the processor lacks AVX2)"
        )
    if state["onednn_isa"] not in (_ONEDNN, "not used"):
        problems.append(
            f"oneDNN runs {state['onednn_isa']!r}, not {_ONEDNN!r} (it was initialised before "
            "the mode was set)"
        )
    if state["mkl_branch"] not in ("COMPATIBLE", "absent"):
        problems.append(
            f"MKL runs its {state['mkl_branch']} branch, not COMPATIBLE (MKL ran before the mode "
            "was set)"
        )
    return problems


def describe(mode: str, device: str, state: dict[str, Any]) -> dict[str, Any]:
    """The ``numerics`` block of ``config.json``: the mode, what each library runs, and a
    ``fingerprint`` over everything the bits depend on. Two runs of one arm and seed with the
    same fingerprint give the same numbers."""
    import torch

    block = {
        "mode": mode,
        "device": device,
        "device_name": _device_name(device),
        "machine": platform.machine(),
        "torch": torch.__version__,
        **state,
        "cpu_model": _cpu_model(),
        "env": {key: os.environ.get(key) for key in PORTABLE_ENV},
    }
    keys = ["mode", "device", "device_name", "machine", "torch", *state]
    if mode == NATIVE:  # the kernels follow the processor: it is part of the numbers
        keys.append("cpu_model")
    payload = json.dumps({k: block[k] for k in keys}, sort_keys=True)
    block["fingerprint"] = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return block


def _state(device: str, portable: bool) -> dict[str, Any]:
    import torch

    return {
        "threads": torch.get_num_threads(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
        "mkl_branch": mkl_branch(set_compatible=portable),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextlib.contextmanager
def applied(mode: str | None, device: str) -> Iterator[dict[str, Any]]:
    """Run the body under numerics ``mode`` (``None``: :func:`requested_mode`) for ``device``
    and yield its ``numerics`` block (:func:`describe`). The per-run settings (deterministic
    algorithms, float32 matmul precision) are restored afterwards; the kernel choices stay, as
    they are fixed for the process.

    ``portable`` on a GPU, on a machine other than x86-64, or in a process whose libraries
    already chose other kernels raises :class:`NumericsError`; ``auto`` falls back to
    ``native`` there, with a warning that says why."""
    import torch

    asked = requested_mode(mode)
    cpu = torch.device(device).type == "cpu"
    problems: list[str] = []
    if asked != NATIVE:
        if not cpu:
            problems.append(f"device {device!r}: portable numerics pins CPU kernels only")
        elif not _x86():
            problems.append(f"machine {platform.machine()}: portable numerics needs x86-64")
        else:
            pin(asked)
    portable = asked != NATIVE and not problems
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_float32_matmul_precision(),
    )
    if portable:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_float32_matmul_precision("highest")
    try:
        state = _state(device, portable)
        if portable:
            problems = _portable_problems(state)
        if problems:
            if asked == PORTABLE:
                raise NumericsError(
                    "numerics 'portable' cannot be guaranteed here: "
                    + "; ".join(problems)
                    + ". Pin before the first torch computation (stabilitykit.numerics.pin(), "
                    "or the pytest plugin, which does it at start-up), or use numerics 'native'"
                )
            if portable or asked == AUTO:
                warnings.warn(
                    "numerics: running 'native' (its numbers are exact for this machine kind "
                    "only): " + "; ".join(problems),
                    stacklevel=3,
                )
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.set_float32_matmul_precision(previous[2])
            portable = False
            state = _state(device, False)
        block = describe(PORTABLE if portable else NATIVE, device, state)
        block["requested"] = asked
        yield block
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.set_float32_matmul_precision(previous[2])
