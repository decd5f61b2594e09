"""Numerics modes: pinned before the first kernel, refused when they cannot be guaranteed."""

import json
import platform
import subprocess
import sys

import pytest
import torch

from stabilitykit import numerics

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86 = pytest.mark.skipif(not X86, reason="portable numerics pins x86-64 kernels")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (kernel choices are fixed once per process)."""
    import os

    base = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    base.pop(numerics.MODE_ENV, None)
    return subprocess.run(
        [sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True
    )


def test_a_bad_mode_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"numerics: got 'fast'; allowed: one of auto"):
        numerics.check_mode("fast")
    with pytest.raises(ValueError, match="STABILITYKIT_NUMERICS"):
        import os

        old = os.environ.get(numerics.MODE_ENV)
        os.environ[numerics.MODE_ENV] = "exact"
        try:
            numerics.requested_mode(None)
        finally:
            os.environ[numerics.MODE_ENV] = old or "auto"


@needs_x86
def test_the_session_runs_pinned_kernels():
    # the plugin pinned them at start-up, before any conftest ran a kernel
    if numerics.requested_mode() == numerics.NATIVE:
        pytest.skip("this session was started with native numerics")
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    with numerics.applied(None, "cpu") as block:
        assert block["mode"] == "portable"
        assert block["mkl_branch"] in ("COMPATIBLE", "absent")
        assert block["onednn_isa"] in ("Intel AVX2", "not used")
        assert torch.are_deterministic_algorithms_enabled()
    assert block["requested"] in ("auto", "portable")


@needs_x86
def test_portable_refuses_a_conflicting_environment(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    with pytest.raises(numerics.NumericsError, match="ATEN_CPU_CAPABILITY=avx512"):
        numerics.pin("portable")


@needs_x86
def test_portable_asked_after_the_kernels_were_chosen_is_refused():
    code = (
        "import torch; torch.ones(64, 64) @ torch.ones(64, 64)\n"
        "torch.nn.Conv2d(3, 8, 3)(torch.ones(2, 3, 16, 16))\n"
        "from stabilitykit import numerics\n"
        "with numerics.applied('portable', 'cpu'): pass\n"
    )
    # kernels chosen natively (a machine may run AVX2 natively; MKL's branch still tells)
    done = _python(code)
    assert done.returncode != 0
    assert "NumericsError: numerics 'portable' cannot be guaranteed here" in done.stderr
    assert "MKL runs its" in done.stderr


@needs_x86
def test_auto_falls_back_to_native_with_a_warning_and_records_it():
    code = (
        "import json, warnings, torch; torch.ones(64, 64) @ torch.ones(64, 64)\n"
        "from stabilitykit import numerics\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    with numerics.applied('auto', 'cpu') as b: pass\n"
        "print(json.dumps({'mode': b['mode'], 'warned': [str(x.message) for x in w]}))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["mode"] == "native"
    assert any("running 'native'" in w for w in out["warned"])


@needs_x86
def test_a_fresh_process_is_pinned_by_applied_itself():
    code = (
        "import json, torch\n"
        "from stabilitykit import numerics\n"
        "with numerics.applied('portable', 'cpu') as b: pass\n"
        "print(json.dumps(b))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    block = json.loads(done.stdout.strip().splitlines()[-1])
    assert (block["mode"], block["aten_capability"]) == ("portable", "AVX2")


def _state(**changes):
    state = {
        "threads": 1,
        "aten_capability": "AVX2",
        "onednn_isa": "Intel AVX2",
        "mkl_branch": "COMPATIBLE",
        "deterministic": True,
        "matmul_precision": "highest",
    }
    return {**state, **changes}


def test_the_fingerprint_covers_what_the_bits_depend_on(monkeypatch):
    portable = numerics.describe("portable", "cpu", _state())
    assert numerics.describe("portable", "cpu", _state())["fingerprint"] == portable["fingerprint"]
    for change in ({"threads": 2}, {"mkl_branch": "AUTO"}, {"aten_capability": "AVX512"}):
        other = numerics.describe("portable", "cpu", _state(**change))
        assert other["fingerprint"] != portable["fingerprint"], change
    native = numerics.describe("native", "cpu", _state())
    assert native["fingerprint"] != portable["fingerprint"]
    # the processor model counts in native mode only
    monkeypatch.setattr(numerics, "_cpu_model", lambda: "Some Other CPU")
    assert numerics.describe("portable", "cpu", _state())["fingerprint"] == portable["fingerprint"]
    assert numerics.describe("native", "cpu", _state())["fingerprint"] != native["fingerprint"]


def test_portable_on_a_gpu_is_refused_and_auto_runs_native(monkeypatch):
    monkeypatch.setattr(numerics, "_device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(numerics, "_state", lambda device, portable: _state())
    refused = pytest.raises(numerics.NumericsError, match="pins CPU kernels only")
    with refused, numerics.applied("portable", "cuda"):
        pass
    warned = pytest.warns(UserWarning, match="running 'native'")
    with warned, numerics.applied("auto", "cuda") as block:
        assert block["mode"] == "native" and block["device_name"] == "Fake GPU"
