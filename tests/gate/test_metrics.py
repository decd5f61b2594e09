import math
from types import SimpleNamespace

import pytest

from stabilitykit.gate.metrics import (
    DEFAULT_RULES,
    ArmRun,
    MetricRule,
    Rules,
    arm_run,
    family_id,
    newest_per_arm,
)
from stabilitykit.judge.verdict import Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, new_run_dir


def test_default_rules_are_the_studys_gates():
    assert DEFAULT_RULES["amp_mae"] == MetricRule("amp_mae", "lower", abs_tol=0.015)
    assert DEFAULT_RULES["phase_mae"] == MetricRule("phase_mae", "lower", abs_tol=0.025)
    assert DEFAULT_RULES["amp_ssim"] == MetricRule("amp_ssim", "higher", abs_tol=0.035)
    assert DEFAULT_RULES["phase_ssim"] == MetricRule("phase_ssim", "higher", abs_tol=0.015)
    best = DEFAULT_RULES["best_val_loss"]
    assert best.direction == "lower" and best.abs_tol is None and best.rel_tol == 0.25


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "up", "abs_tol": 0.1}, "direction: got 'up'"),
        ({"direction": "lower", "abs_tol": -0.1}, "abs_tol: got -0.1"),
        ({"direction": "lower", "rel_tol": math.inf}, "rel_tol: got inf"),
        ({"direction": "lower"}, "give abs_tol, rel_tol or both"),
    ],
)
def test_rule_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetricRule("m", **kwargs)


def test_limits_are_one_sided_and_widened_by_the_spread():
    lower = MetricRule("loss", "lower", abs_tol=0.01, rel_tol=0.5)
    assert lower.tolerance(-0.2) == pytest.approx(0.11)
    assert lower.limit(0.2) == pytest.approx(0.31)
    assert lower.limit(0.2, spread=0.05) == pytest.approx(0.36)
    assert lower.is_worse(0.32, lower.limit(0.2)) and not lower.is_worse(0.0, lower.limit(0.2))
    higher = MetricRule("ssim", "higher", abs_tol=0.035)
    assert higher.limit(0.9) == pytest.approx(0.865)
    assert higher.is_worse(0.86, 0.865) and not higher.is_worse(0.99, 0.865)
    assert higher.is_better(0.94, 0.9) and not higher.is_better(0.93, 0.9)
    assert not higher.is_better(0.94, 0.9, spread=0.01)


def test_override_replaces_adds_and_removes_without_touching_the_defaults():
    looser = MetricRule("amp_ssim", "higher", abs_tol=0.1)
    extra = MetricRule("final_val_loss", "lower", rel_tol=0.5)
    rules = DEFAULT_RULES.override(amp_ssim=looser, grad_norm_preclip_p99=None)
    rules = rules.override({"final_val_loss": extra})
    assert rules["amp_ssim"] is looser and rules["final_val_loss"] is extra
    assert "grad_norm_preclip_p99" not in rules and "grad_norm_preclip_p99" in DEFAULT_RULES
    assert DEFAULT_RULES["amp_ssim"].abs_tol == 0.035
    assert isinstance(rules, Rules) and len(rules) == len(DEFAULT_RULES)


def test_override_rejects_a_rule_under_another_name():
    with pytest.raises(ValueError, match="is for metric 'amp_mae'"):
        DEFAULT_RULES.override(amp_ssim=DEFAULT_RULES["amp_mae"])
    with pytest.raises(TypeError, match="expected MetricRule"):
        DEFAULT_RULES.override(amp_ssim=0.1)
    with pytest.raises(ValueError, match="given twice"):
        Rules([DEFAULT_RULES["amp_mae"], DEFAULT_RULES["amp_mae"]])


def test_arm_run_reads_a_record(tmp_path):
    writer = RunWriter(new_run_dir(tmp_path, "control-hybrid-b4-seed7"))
    writer.write_config(
        {
            "arm": {"name": "control", "seed": 7},
            "arm_id": "control-hybrid-b4-seed7",
            "arm_hash": "a" * 16,
            "family_hash": "f" * 16,
            "scale": "ci",
            "tags": {"stage": "stage_a"},
        }
    )
    writer.write_metrics({"amp_ssim": 0.9, "phase_vacuous": False})
    stats = {"best_val_loss": 0.02, "grad_norm_preclip_p99": "nan", "status": "completed"}
    writer.write_stats(stats, Verdict(VerdictKind.SPIKING))
    writer.close()
    run = arm_run(writer.path)
    assert (run.arm_id, run.arm_name, run.seed, run.scale, run.stage) == (
        "control-hybrid-b4-seed7",
        "control",
        7,
        "ci",
        "stage_a",
    )
    assert run.family_hash == "f" * 16 and run.family_id == "control-hybrid-b4"
    assert run.verdict == "spiking" and run.complete
    assert run.values["amp_ssim"] == 0.9 and run.values["best_val_loss"] == 0.02
    assert run.values["grad_norm_preclip_p99"] is None  # logged, but not finite
    assert "status" not in run.values and "phase_vacuous" not in run.values
    assert arm_run(SimpleNamespace(run_dir=writer.path)) == run  # an ArmResult


def test_arm_run_from_a_row_needs_the_family_hash():
    row = {"arm_id": "x-hybrid-seed1", "arm_hash": "a" * 16, "verdict": "stable", "seed": 1}
    with pytest.raises(ValueError, match="x-hybrid-seed1: no family_hash"):
        arm_run(row)
    run = arm_run({**row, "family_hash": "f" * 16, "amp_ssim": 0.5, "run": "r1"})
    assert run.values == {"amp_ssim": 0.5} and run.arm_name == "x-hybrid" and run.seed == 1


def _run(arm_hash, source, complete=True):
    return ArmRun(
        "a-seed1", "a", arm_hash, "f", 1, "ci", "stable", complete=complete, source=source
    )


def test_newest_per_arm_prefers_complete_then_newest():
    runs = [_run("h1", "a-1"), _run("h1", "a-3", complete=False), _run("h1", "a-2")]
    runs += [_run("h2", "b-1", complete=False)]
    assert [r.source for r in newest_per_arm(runs)] == ["a-2", "b-1"]


def test_family_id_strips_the_seed():
    assert family_id("deep_control-hybrid-b8-seed20260128") == "deep_control-hybrid-b8"
    assert family_id("custom") == "custom"
