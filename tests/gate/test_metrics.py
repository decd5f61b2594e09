import math
from types import SimpleNamespace

import pytest

from stabilitykit.gate.metrics import (
    DEFAULT_RULES,
    ArmRun,
    MetricRule,
    Rules,
    WorkloadDecl,
    arm_run,
    as_rules,
    family_id,
    merged_rules,
    newest_per_arm,
    numerics_of,
    rules_from_config,
)
from stabilitykit.judge.verdict import Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, new_run_dir

WORKLOAD = {
    "name": "gridlines",
    "fingerprint": "0123456789abcdef",
    "primary_metric": "amp_ssim",
    "metrics": [
        {
            "name": "amp_ssim",
            "label": "amp SSIM",
            "direction": "higher",
            "abs_tol": 0.035,
            "rel_tol": None,
            "floor": "amp_ssim_floor",
        },
        {"name": "amp_mae", "label": "amp MAE", "direction": "lower", "abs_tol": 0.015},
        {"name": "amp_psnr", "label": "amp PSNR", "direction": "higher"},  # no tolerance
    ],
    "diagnostics": ["amp_ssim_floor", "pred_amp_std"],
}


NUMERICS = {
    "mode": "portable",
    "fingerprint": "0123456789abcdef",
    "torch": "2.13.0+cpu",
    "machine": "x86_64",
    "device": "cpu",
    "device_name": None,
    "threads": 2,
    "env": {"MKL_CBWR": "COMPATIBLE"},
}


def test_default_rules_are_the_engines_own_metrics():
    assert list(DEFAULT_RULES) == ["best_val_loss", "grad_norm_preclip_p99"]
    best = DEFAULT_RULES["best_val_loss"]
    assert best.direction == "lower" and best.abs_tol is None and best.rel_tol == 0.25
    assert DEFAULT_RULES["grad_norm_preclip_p99"].rel_tol == 1.0
    assert "amp_ssim" not in DEFAULT_RULES  # a workload's metrics come from its records


def test_rules_from_config_add_the_declared_metrics():
    rules = rules_from_config({"workload": WORKLOAD})
    assert rules["amp_ssim"] == MetricRule("amp_ssim", "higher", abs_tol=0.035)
    assert rules["amp_mae"] == MetricRule("amp_mae", "lower", abs_tol=0.015)
    assert "amp_psnr" not in rules  # declared without a tolerance: shown, not gated
    assert list(rules) == ["amp_ssim", "amp_mae", *DEFAULT_RULES]
    assert rules_from_config({}) == DEFAULT_RULES  # an older record: the engine's metrics only
    assert rules_from_config({"workload": None}) == DEFAULT_RULES
    own = {"name": "best_val_loss", "direction": "lower", "rel_tol": 0.5}
    assert rules_from_config({"workload": {"metrics": [own]}})["best_val_loss"].rel_tol == 0.5
    with pytest.raises(ValueError, match=r"workload.metrics\[0\]: m: direction 'up'"):
        rules_from_config({"workload": {"metrics": [{"name": "m", "direction": "up"}]}})


def test_workload_decl_reads_the_block_and_keeps_what_it_can():
    decl = WorkloadDecl.from_config({"workload": WORKLOAD})
    assert decl.declared and decl.name == "gridlines" and decl.primary.name == "amp_ssim"
    assert decl.primary.title == "amp SSIM" and decl.primary.floor == "amp_ssim_floor"
    assert decl.floors == ("amp_ssim_floor",) and decl.diagnostics[1] == "pred_amp_std"
    assert WorkloadDecl.from_block(decl.to_json()) == decl  # the stage-metrics row round trip
    assert not WorkloadDecl.from_config({}).declared and WorkloadDecl().to_json() is None
    broken = WorkloadDecl.from_block({"metrics": [{"name": "a", "direction": "lower"}, 3]})
    assert [m.name for m in broken.metrics] == ["a"]
    assert broken.problems == ("workload.metrics[1]: got int 3; expected an object with a name",)


def test_as_rules_defaults_to_the_runs_rules():
    rules = rules_from_config({"workload": WORKLOAD})
    run = ArmRun("a-seed1", "a", "h", "f", 1, "ci", "stable", rules=rules)
    assert as_rules(None, run) is rules and as_rules(None) is DEFAULT_RULES
    assert as_rules(DEFAULT_RULES, run) is DEFAULT_RULES
    old = ArmRun("b-seed1", "b", "h2", "g", 1, "ci", "stable")
    assert old.rules is DEFAULT_RULES
    assert list(merged_rules([old, run])) == [
        "best_val_loss",
        "grad_norm_preclip_p99",
        "amp_ssim",
        "amp_mae",
    ]
    assert merged_rules([]) is DEFAULT_RULES


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
    base = rules_from_config({"workload": WORKLOAD})
    looser = MetricRule("amp_ssim", "higher", abs_tol=0.1)
    extra = MetricRule("final_val_loss", "lower", rel_tol=0.5)
    rules = base.override(amp_ssim=looser, grad_norm_preclip_p99=None)
    rules = rules.override({"final_val_loss": extra})
    assert rules["amp_ssim"] is looser and rules["final_val_loss"] is extra
    assert "grad_norm_preclip_p99" not in rules and "grad_norm_preclip_p99" in DEFAULT_RULES
    assert base["amp_ssim"].abs_tol == 0.035
    assert isinstance(rules, Rules) and len(rules) == len(base)


def test_override_rejects_a_rule_under_another_name():
    mae = MetricRule("amp_mae", "lower", abs_tol=0.015)
    with pytest.raises(ValueError, match="is for metric 'amp_mae'"):
        DEFAULT_RULES.override(amp_ssim=mae)
    with pytest.raises(TypeError, match="expected MetricRule"):
        DEFAULT_RULES.override(amp_ssim=0.1)
    with pytest.raises(ValueError, match="given twice"):
        Rules([mae, mae])


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
            "workload": WORKLOAD,
            "numerics": NUMERICS,
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
    assert run.rules == rules_from_config({"workload": WORKLOAD})
    assert run.numerics == "0123456789abcdef"
    assert run.numerics_label == (
        "portable 0123456789abcdef (torch 2.13.0+cpu, machine x86_64, device cpu, threads 2)"
    )


def test_arm_run_of_an_older_record_or_a_broken_block(tmp_path):
    def write(**extra):
        writer = RunWriter(new_run_dir(tmp_path, "x-seed1"))
        config = {"arm_id": "x-seed1", "arm_hash": "a" * 16, "family_hash": "f" * 16, **extra}
        writer.write_config(config)
        writer.close()
        return writer.path

    older = arm_run(write())
    assert older.rules is DEFAULT_RULES
    assert (older.numerics, older.numerics_label) == (None, "unknown")  # equal to nothing
    broken = write(workload={"metrics": [{"name": "m", "direction": "lower", "abs_tol": -1}]})
    with pytest.raises(ValueError, match=r"config.json: workload.metrics\[0\]: m: abs_tol -1"):
        arm_run(broken)


def test_arm_run_from_a_row_needs_the_family_hash():
    row = {"arm_id": "x-hybrid-seed1", "arm_hash": "a" * 16, "verdict": "stable", "seed": 1}
    with pytest.raises(ValueError, match="x-hybrid-seed1: no family_hash"):
        arm_run(row)
    run = arm_run({**row, "family_hash": "f" * 16, "amp_ssim": 0.5, "run": "r1"})
    assert run.values == {"amp_ssim": 0.5} and run.arm_name == "x-hybrid" and run.seed == 1
    assert run.rules is DEFAULT_RULES  # a row without a workload block
    declared = arm_run({**row, "family_hash": "f" * 16, "workload": WORKLOAD})
    assert declared.rules == rules_from_config({"workload": WORKLOAD})
    assert declared.numerics is None
    pinned = arm_run({**row, "family_hash": "f" * 16, "numerics": NUMERICS})
    assert pinned.numerics == "0123456789abcdef" and "numerics" not in pinned.values


def test_numerics_of_describes_the_block():
    assert numerics_of({"numerics": NUMERICS})[0] == "0123456789abcdef"
    native = {**NUMERICS, "mode": "native", "cpu_model": "AMD EPYC 9654"}
    assert numerics_of({"numerics": native})[1].endswith("threads 2, cpu_model AMD EPYC 9654)")
    assert numerics_of({"numerics": {"mode": "portable"}}) == (None, "unknown")
    assert numerics_of({"numerics": "portable"}) == (None, "unknown")


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
