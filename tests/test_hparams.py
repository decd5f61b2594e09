"""Every hyper-parameter a run records reaches what trains: read back from the optimiser, the
scheduler and the clipper that ``run_arm`` builds for the arm, and compared with ``config.json``.

A parameter the arm carries and the record shows, but that never reaches the optimiser, passes
every test that only reads the record; these read the objects themselves. ``run_arm`` is stopped
where the loop builds its scheduler, before the first step: nothing is trained.
"""

import numpy as np
import pytest
import torch
from torch import nn

import stabilitykit.run
import stabilitykit.train.loop
from stabilitykit.arm import CLIP_ALGORITHMS, OPTIMIZERS, SCHEDULERS, Arm, apply_scale
from stabilitykit.record.run_record import read_record
from stabilitykit.train.clipping import final_layer_name, unitwise_norm
from stabilitykit.train.schedulers import warmup_cosine_factor
from stabilitykit.workloads.gridlines.study import CONTROL
from stabilitykit.workloads.supervised import SupervisedWorkload


class Probe(SupervisedWorkload):
    """Two convolutions on 8 samples of 1x4x4: the smallest model with a final layer."""

    name = "hparam_probe"

    def arrays(self, spec):
        x = np.random.default_rng(0).normal(size=(8, 1, 4, 4)).astype(np.float32)
        return {"x_train": x[:6], "y_train": x[:6], "x_test": x[6:], "y_test": x[6:]}

    def build_model(self, data, architecture, **kwargs):
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 1))


PROBE = Arm(name="probe", workload=Probe, epochs=6, batch_size=2)

#: Together they cover every optimiser, scheduler and clipping algorithm the arm offers.
ARMS = {
    "adam-constant-norm": PROBE.replace(
        optimizer="adam", lr=2e-3, betas=(0.8, 0.95), weight_decay=1e-4, clip="norm", clip_value=0.5
    ),
    "adamw-warmup_cosine-value": PROBE.replace(
        optimizer="adamw",
        lr=3e-3,
        betas=(0.85, 0.99),
        weight_decay=0.05,
        clip="value",
        clip_value=0.25,
        scheduler="warmup_cosine",
        warmup_epochs=2,
    ),
    "sgd-step-agc": PROBE.replace(
        optimizer="sgd",
        lr=0.05,
        betas=(0.7, 0.999),
        weight_decay=1e-3,
        clip="agc",
        clip_value=0.02,
        scheduler="step",
        lr_step_epochs=2,
        lr_gamma=0.3,
    ),
    "adam-plateau-agc_unit": PROBE.replace(
        optimizer="adam", lr=1e-3, clip="agc_unit", clip_value=0.01, scheduler="plateau"
    ),
    "sgd-constant-none": PROBE.replace(optimizer="sgd", lr=0.1, clip="none", clip_value=None),
    # a built-in workload at smoke scale, whose scale changes the recipe (lr, epochs)
    "gridlines-adamw-warmup_cosine-norm": CONTROL.replace(
        optimizer="adamw", weight_decay=0.01, scheduler="warmup_cosine", warmup_epochs=1
    ),
}
#: Stepping a schedule with no optimiser step is the point here, not a mistake.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
OPTIMIZER_TYPES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def test_the_arms_cover_every_choice():
    arms = ARMS.values()
    assert {a.optimizer for a in arms} == set(OPTIMIZERS) == set(OPTIMIZER_TYPES)
    assert {a.scheduler for a in arms} == set(SCHEDULERS)
    assert {a.clip for a in arms} == set(CLIP_ALGORITHMS)


class _StoppedError(Exception):
    """Raised once the loop has built its scheduler: no step is taken."""


@pytest.fixture
def built(tmp_path_factory, monkeypatch):
    """``arm -> (config.json, setup, scheduler, the optimiser's param groups as built)``."""
    cache = tmp_path_factory.getbasetemp() / "data-cache"
    seen = {}
    real_train, real_scheduler = stabilitykit.run.train, stabilitykit.train.loop.build_scheduler

    def train(setup, *args, **kwargs):
        seen["setup"] = setup
        return real_train(setup, *args, **kwargs)

    def build_scheduler(optimizer, *args, **kwargs):
        seen["groups"] = [dict(g) for g in optimizer.param_groups]  # before a schedule moves lr
        seen["scheduler"] = real_scheduler(optimizer, *args, **kwargs)
        raise _StoppedError

    monkeypatch.setattr(stabilitykit.run, "train", train)
    monkeypatch.setattr(stabilitykit.train.loop, "build_scheduler", build_scheduler)

    def go(arm):
        seen.clear()
        result = stabilitykit.run.run_arm(
            arm, out_dir=tmp_path_factory.mktemp("out"), cache_dir=cache, progress=False
        )
        assert result.stats["steps"] == 0, "the probe trained"
        assert "_StoppedError" in (result.verdict.evidence[0].message or ""), (
            result.verdict.explain()
        )
        return read_record(result.run_dir).config, seen["setup"], seen["scheduler"], seen["groups"]

    return go


@pytest.mark.parametrize("key", sorted(ARMS))
def test_every_recorded_hyper_parameter_reaches_what_trains(built, key):
    arm = apply_scale(ARMS[key], "smoke")
    config, setup, scheduler, groups = built(arm)
    recorded = config["arm"]
    assert recorded["optimizer"] == arm.optimizer  # the record is of the arm that ran

    _check_optimizer(recorded, setup, groups, config.get("fast_path") or {})
    _check_loop(recorded, config, setup)
    _check_scheduler(recorded, scheduler)
    _check_clipper(recorded, config, setup)


def _check_optimizer(recorded, setup, groups, fast_path):
    optimizer = setup.optimizer
    assert type(optimizer) is OPTIMIZER_TYPES[recorded["optimizer"]]
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for p in setup.model.parameters()}, "a parameter is not optimised"
    for group in groups:
        assert group["lr"] == recorded["lr"]
        assert group["weight_decay"] == recorded["weight_decay"]
        assert not group.get("maximize") and bool(group.get("fused")) == bool(
            fast_path.get("fused")
        )
        if recorded["optimizer"] == "sgd":
            assert group["momentum"] == recorded["betas"][0]
            assert group["dampening"] == 0 and not group["nesterov"]
        else:
            assert list(group["betas"]) == recorded["betas"]
            assert group["eps"] == 1e-8 and not group["amsgrad"]  # torch's: not arm fields
        if recorded["optimizer"] == "adam":  # coupled L2 (AdamW decouples it)
            assert not group.get("decoupled_weight_decay", False)


def _check_loop(recorded, config, setup):
    assert setup.epochs == recorded["epochs"] and setup.batch_size == recorded["batch_size"]
    assert setup.grad_norm_every == recorded["grad_norm_every"]
    assert setup.shuffle_seed == config["seeds"]["shuffle"]


def _check_scheduler(recorded, scheduler):
    """The lr of each epoch, stepped through the whole run (a constant validation loss)."""
    lr, epochs = recorded["lr"], recorded["epochs"]
    assert scheduler.name == recorded["scheduler"] and scheduler.epochs == epochs
    got = []
    for _ in range(epochs):
        got.append(scheduler.lr)
        scheduler.step(1.0)
    if recorded["scheduler"] == "constant":
        want = [lr] * epochs
    elif recorded["scheduler"] == "step":
        gamma, every = recorded["lr_gamma"], recorded["lr_step_epochs"]
        want = [lr * gamma ** (e // every) for e in range(epochs)]
    elif recorded["scheduler"] == "warmup_cosine":
        warmup = recorded["warmup_epochs"]
        assert warmup >= 1 and got[warmup] == pytest.approx(lr)  # the peak, after the warm-up
        want = [
            lr * warmup_cosine_factor(e, epochs=epochs, warmup_epochs=warmup) for e in range(epochs)
        ]
    else:  # plateau: no arm field; the lr starts at the arm's and falls on a flat loss
        for _ in range(10):
            scheduler.step(1.0)
        assert got[0] == lr and scheduler.lr < lr
        return
    assert got == pytest.approx(want, rel=1e-12)


def _check_clipper(recorded, config, setup):
    """The clipper's settings, and what it does to gradients far over any limit."""
    clipper, model = setup.clipper, setup.model
    assert clipper.algorithm == recorded["clip"] and clipper.value == recorded["clip_value"]
    assert config["clipping"] == clipper.description
    params = dict(model.named_parameters())
    for p in params.values():
        p.grad = torch.full_like(p, 10.0)
    clipper(model)
    grads = {n: p.grad for n, p in params.items()}
    value = recorded["clip_value"]
    if recorded["clip"] == "none":
        assert all(torch.all(g == 10.0) for g in grads.values())
    elif recorded["clip"] == "norm":
        total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads.values()]))
        assert float(total) == pytest.approx(value, rel=1e-4)
    elif recorded["clip"] == "value":
        assert max(float(g.abs().max()) for g in grads.values()) == pytest.approx(value)
    elif recorded["clip"] == "agc":
        for n, g in grads.items():
            limit = value * max(float(params[n].detach().norm()), clipper.eps)
            assert float(g.norm()) == pytest.approx(limit, rel=1e-4)
    else:  # agc_unit: the final layer is skipped; each output unit of the rest at its limit
        final = final_layer_name(model)
        for n, g in grads.items():
            if n.startswith(final + "."):
                assert torch.all(g == 10.0)
                continue
            limits = value * unitwise_norm(params[n].detach()).clamp_min(clipper.eps)
            torch.testing.assert_close(unitwise_norm(g), limits, rtol=1e-4, atol=0)
