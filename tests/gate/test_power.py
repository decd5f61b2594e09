import math

import pytest

from stabilitykit.cli import main
from stabilitykit.gate.baseline import baseline_from_runs, write_baseline
from stabilitykit.gate.metrics import DEFAULT_RULES, ArmRun
from stabilitykit.gate.power import power_markdown, power_table


def run(seed, loss, verdict="stable", name="control", family="f" * 16):
    return ArmRun(
        arm_id=f"{name}-b4-seed{seed}",
        arm_name=name,
        arm_hash=f"{family[:8]}{seed:08d}",
        family_hash=family,
        seed=seed,
        scale="ci",
        verdict=verdict,
        values={"best_val_loss": loss},
    )


LOSSES = (0.10, 0.11, 0.12, 0.13, 0.14)  # median 0.12, std 0.0158


def hand_made():
    runs = [run(s, v) for s, v in enumerate(LOSSES)]
    runs += [
        run(1, 0.2, "collapsed", "flaky", "e" * 16),
        run(2, 0.2, name="flaky", family="e" * 16),
    ]
    return baseline_from_runs(runs, stage="stage_a", rules=DEFAULT_RULES)


def test_power_table_of_a_hand_made_baseline():
    (control, rows), (flaky, flaky_rows) = power_table(hand_made())
    assert (control.arm_id, control.n, control.failures, control.across) == (
        "control-b4",
        5,
        0,
        "any failure",
    )
    assert flaky.across == "not decided (failed at 1 of 2)"
    loss = next(r for r in rows if r.metric == "best_val_loss")
    std = math.sqrt(0.00025)  # sample std of 0.10 ... 0.14
    assert (loss.n, loss.median, loss.std) == (5, pytest.approx(0.12), pytest.approx(std))
    # same machine: 3 std = 0.0474, capped by the declared 25 % of 0.12 = 0.03
    assert loss.same_machine == pytest.approx(0.03)
    # across machines: the interval 0.12 + 2.776 * std * sqrt(1.2) = 0.12 + 0.0481
    across = 2.776445 * std * math.sqrt(1.2)
    assert loss.across == pytest.approx(across, 1e-4)
    assert loss.across_80 == pytest.approx(across + 0.8416 * std, 1e-4)
    assert flaky_rows[0].across is None  # one stable seed: nothing decided


def test_power_markdown_and_the_cli(tmp_path, capsys):
    text = power_markdown([("stage_a", power_table(hand_made()))])
    assert "| stage_a | control-b4 | best_val_loss | lower | 5 | 0.12 | 0.0158 | 0.03 (25%) |" in (
        text
    )
    assert "| 0.0481 (40%) | 0.0614 (51%) |" in text
    path = write_baseline(hand_made(), tmp_path / "stage_a.json")
    assert main(["power", str(path)]) == 0
    assert "| stage_a | control-b4 | verdict | stable | 5 | failed at 0 of 5 |" in (
        capsys.readouterr().out
    )
