from stabilitykit.report.narrative import spike_text


def _row(seed, verdict, worst):
    spikes = None if worst is None else {"count": 2, "worst": worst}
    return {"seed": seed, "verdict": verdict, "spikes": spikes}


WORST = {
    "signal": "loss",
    "step": 18,
    "value": 206.5,
    "baseline": 0.5,
    "limit": 2.0,
    "ratio": 103.25,
    "top_layer": ["blocks.7.spectral", 2407.0],
}


def test_a_recovered_spike_is_named_with_its_step_top_layer_and_recovery():
    text = spike_text([_row(1, "stagnated", WORST)])
    assert "loss 206.5, 413 x its running mean 0.5 at step 18" in text
    assert "top layer blocks.7.spectral (grad norm 2407)" in text
    assert "the run recovered" in text


def test_the_worst_spike_over_seeds_and_a_run_that_did_not_recover():
    small = {**WORST, "step": 5, "value": 3.0, "ratio": 1.5}
    rows = [_row(1, "stable", small), _row(2, "diverged", WORST), _row(3, "stable", None)]
    text = spike_text(rows)
    assert "at step 18 (seed 2)" in text and "did not recover" in text
    assert "2 of 3 runs had spikes" in text
    assert spike_text([_row(1, "stable", None)]) == ""  # none, or a record before detection
