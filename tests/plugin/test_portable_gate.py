"""The gate on a simulated second machine: baselines accepted under portable numerics, then the
same code gated under native numerics (other kernels, another numerics fingerprint). The
unchanged code passes; injected regressions are caught."""

import platform

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="portable numerics (the accepting machine) needs x86-64",
)

STAGE = """
import dataclasses
import os

import numpy as np
import pytest
import torch
from torch import nn

import stabilitykit.run as run_module
from stabilitykit import Arm, SupervisedWorkload
from stabilitykit.judge.criteria import Finite, LossBounded


class Shift(SupervisedWorkload):
    name = "portable_gate_shift"

    def arrays(self, spec):
        x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
        y = 2 * np.roll(x, 1, axis=-1)
        return {"x_train": x[:32], "y_train": y[:32], "x_test": x[32:], "y_test": y[32:]}

    def build_model(self, data, architecture, **kwargs):
        return nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")


CONTROL = Arm(name="control", workload=Shift, epochs=12, lr=3e-2, batch_size=8)

if os.environ.get("SK_TEST_DEGRADE"):  # a code regression: the optimiser ignores most of the lr
    build = run_module.build_optimizer
    run_module.build_optimizer = lambda name, params, lr, *a, **kw: build(
        name, params, lr / 100 if lr == CONTROL.lr else lr, *a, **kw
    )
    setup_for = run_module.setup_for

    def poisoned(arm, *args, **kwargs):  # a second one: the loss of the other arm blows up
        setup = setup_for(arm, *args, **kwargs)
        if arm.lr != CONTROL.lr:
            loss_fn = setup.loss_fn
            nan = torch.tensor(float("nan"))
            setup = dataclasses.replace(setup, loss_fn=lambda m, batch: loss_fn(m, batch) * nan)
        return setup

    run_module.setup_for = poisoned

ARMS = [CONTROL, CONTROL.replace(name="faster", lr=5e-2)]


@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: a.name)
def test_gated(arm, run_arm):
    run_arm(arm, criteria=(Finite(), LossBounded()))
"""


def run(pytester, cache, *args):
    argv = ["--sk-scale", "none", "--sk-cache", str(cache), "-p", "no:cacheprovider", *args]
    return pytester.runpytest_subprocess(*argv)


def test_a_second_machine_passes_the_unchanged_code_and_catches_regressions(
    pytester, tmp_path_factory, monkeypatch
):
    cache = tmp_path_factory.getbasetemp() / "plugin-data-cache"
    pytester.makepyfile(STAGE)
    gate = ("--sk-baseline", "baselines", "--sk-require-baseline")
    accept = ("--sk-numerics", "portable", "--sk-seeds", "5", "--sk-baseline", "baselines")
    run(pytester, cache, *accept, "--sk-accept", "--sk-out", "accepted").assert_outcomes(passed=10)

    second = ("--sk-numerics", "native")
    unchanged = run(pytester, cache, *second, *gate, "--sk-out", "unchanged")
    unchanged.assert_outcomes(passed=2)
    unchanged.stdout.fnmatch_lines(["*compared across machines: against 5 seeds*"])
    unchanged.stdout.fnmatch_lines(["*gate passed against*"])
    assert "regressed" not in unchanged.stdout.str()

    monkeypatch.setenv("SK_TEST_DEGRADE", "1")
    regressed = run(pytester, cache, *second, *gate, "--sk-out", "regressed")
    regressed.assert_outcomes(failed=2)
    out = regressed.stdout.str()
    assert "compared across machines" in out
    regressed.stdout.fnmatch_lines(["*control*regressed*rel_l2*"])
    regressed.stdout.fnmatch_lines(["*faster*regressed*verdict diverged*"])
