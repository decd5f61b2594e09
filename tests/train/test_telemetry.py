import math

import torch

from stabilitykit.train.telemetry import StepBuffer, summarise_history, summarise_steps


def test_buffer_flushes_every_k_and_finds_first_nonfinite():
    flushed = []
    buf = StepBuffer(flushed.append, flush_every=3)
    t = torch.tensor
    assert buf.add(1, 1, 0.1, t(1.0), t(2.0), t(1.0)) is None
    assert buf.add(2, 1, 0.1, t(float("nan")), None, None) is None
    assert flushed == []
    assert buf.add(3, 1, 0.1, t(0.5), t(float("inf")), t(1.0)) == 2
    rows = flushed[0]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["grad_norm_preclip"] == 2.0 and "grad_norm_preclip" not in rows[1]
    assert rows[1]["loss"] == "nan" and rows[2]["grad_norm_preclip"] == "inf"


def test_summarise_steps():
    steps = [
        {"step": i, "loss": 1.0 / i, "grad_norm_preclip": float(i), "grad_norm_postclip": 1.0}
        for i in range(1, 101)
    ]
    steps[49]["grad_norm_preclip"] = 1000.0
    s = summarise_steps(steps)
    assert s["steps"] == 100 and s["first_loss"] == 1.0 and s["max_loss_step"] == 1
    assert s["grad_norm_preclip_max"] == 1000.0 and s["grad_norm_preclip_max_step"] == 50
    assert s["grad_norm_preclip_min"] == 1.0 and s["grad_norm_postclip_max"] == 1.0
    assert s["nonfinite"] is False and s["nonfinite_step"] is None
    assert math.isclose(s["grad_norm_preclip_median"], 51.5)


def test_summarise_steps_nonfinite_and_empty():
    s = summarise_steps([{"step": 1, "loss": 1.0}, {"step": 2, "loss": "nan"}])
    assert s["nonfinite"] and s["nonfinite_step"] == 2 and s["final_loss"] == 1.0
    empty = summarise_steps([])
    assert empty["steps"] == 0 and empty["grad_norm_preclip_max"] is None


def test_summarise_history_ignores_epoch_zero_for_best():
    h = [
        {"epoch": 0, "val_loss": 0.05},
        {"epoch": 1, "val_loss": 0.3},
        {"epoch": 2, "val_loss": 0.2},
    ]
    s = summarise_history(h)
    assert s["initial_val_loss"] == 0.05 and s["best_val_loss"] == 0.2
    assert s["best_val_epoch"] == 2 and s["final_val_loss"] == 0.2 and s["epochs_completed"] == 2


def test_summarise_steps_says_how_high_the_loss_stayed_and_where_it_ended():
    losses = [1.0] * 50 + [300.0, 5.0, 7.0, 6.0, 8.0, 9.0] + [1.0] * 44
    s = summarise_steps([{"step": i + 1, "loss": v} for i, v in enumerate(losses)])
    assert s["loss_sustained_steps"] == 5  # max(5, 2 % of 100)
    assert (s["loss_sustained"], s["loss_sustained_step"]) == (5.0, 51)  # 300, 5, 7, 6, 8
    assert (s["final_loss"], s["final_loss_step"]) == (1.0, 100)
    assert s["largest_excursion"]["loss"]["step"] == 51
    short = summarise_steps([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}])
    assert short["loss_sustained"] is None and short["loss_sustained_step"] is None
    assert summarise_steps([])["largest_excursion"] == {}
