"""Per-layer telemetry, spike detection with its evidence, and replay of a recorded step."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from stabilitykit import Arm, SupervisedWorkload, run_arm
from stabilitykit.cli import main
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Observation, Spikes, with_criteria
from stabilitykit.judge.spikes import (
    DEFAULT_RULES,
    GRAD_NORM_SPIKES,
    LOSS_SPIKES,
    SpikeDetector,
    SpikeRule,
    find_spikes,
    largest_excursions,
)
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.run_record import LAYERS
from stabilitykit.replay import replay
from stabilitykit.train.telemetry import summarise_steps

N_TRAIN, SPIKY = 32, 13  # training sample 13 carries the injected spike


class TwoBranches(nn.Module):
    """``y = quiet(x[:, :1]) + loud(x[:, 1:])``: channel 1 is zero except in the spiky sample,
    so ``loud`` has no gradient except on the batches that hold it."""

    def __init__(self):
        super().__init__()
        self.quiet = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
        self.loud = nn.Conv2d(1, 1, 1, bias=False)

    def forward(self, x):
        return self.quiet(x[:, :1]) + self.loud(x[:, 1:])


class Spiky(SupervisedWorkload):
    """y = x shifted; training sample SPIKY has a huge second channel (the injected spike)."""

    name = "test_spiky"

    def arrays(self, spec):
        x = np.random.default_rng(1).normal(size=(40, 2, 8, 8)).astype(np.float32)
        x[:, 1] = 0.0
        x[SPIKY, 1] = 200.0
        y = np.roll(x[:, :1], 1, axis=-1)
        return {
            "x_train": x[:N_TRAIN],
            "y_train": y[:N_TRAIN],
            "x_test": x[N_TRAIN:],
            "y_test": y[N_TRAIN:],
        }

    def build_model(self, data, architecture, **kwargs):
        return TwoBranches()


ARM = Arm(name="spiky", workload=Spiky, epochs=6, lr=1e-2, batch_size=4, layer_norm_every=5)
#: 8 steps per epoch; sample SPIKY is in one batch per epoch.
RULE = Spikes("loss", window=8, warmup=4, rtol=3.0, name="loss_spikes")


def _batches(seed, epochs):
    """The loop's batches: one randperm per epoch from a generator seeded with the shuffle
    seed (arm seed + 1)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(N_TRAIN, generator=g)
        out += [order[i : i + 4].tolist() for i in range(0, N_TRAIN, 4)]
    return out


@pytest.fixture(scope="module")
def spiky(tmp_path_factory):
    out = tmp_path_factory.mktemp("spiky")
    criteria = with_criteria(DEFAULT_CRITERIA, RULE)
    result = run_arm(
        ARM,
        out_dir=out,
        cache_dir=out / "cache",
        criteria=criteria,
        keep_checkpoints=True,
        progress=False,
    )
    return result


def test_a_spike_names_its_step_batch_and_top_layer(spiky):
    batches = _batches(ARM.seed + 1, ARM.epochs)
    holding = [i + 1 for i, b in enumerate(batches) if SPIKY in b]
    spikes = [s for s in spiky.stats["spikes"] if s["criterion"] == "loss_spikes"]
    assert spikes, spiky.stats["steps"]
    steps = [s["step"] for s in spikes]
    warm = [s for s in holding if s > RULE.warmup]
    assert steps == warm  # every batch with the spiky sample after warm-up, and no other
    for spike in spikes:
        assert spike["batch"] == batches[spike["step"] - 1] and SPIKY in spike["batch"]
        assert spike["epoch"] == (spike["step"] - 1) // 8 + 1
        assert spike["top_layers"][0][0] == "loud"
        assert spike["value"] > spike["limit"] > spike["baseline"]
    assert spiky.verdict.kind is not VerdictKind.SPIKING  # evidence, not a failure


def test_layer_telemetry_is_logged_every_k_steps_and_at_spikes(spiky):
    lines = (spiky.run_dir / LAYERS).read_text().splitlines()
    header, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["layers"] == ["quiet", "loud"] and header["every"] == 5
    spike_steps = {s["step"] for s in spiky.stats["spikes"]}
    periodic = {r["step"] for r in rows if "update_ratio" in r}
    assert periodic == set(range(1, 6 * 8 + 1, 5))
    assert {r["step"] for r in rows if r.get("spike")} == spike_steps
    recorded = {
        json.loads(line)["step"]: json.loads(line)
        for line in (spiky.run_dir / "steps.jsonl").read_text().splitlines()[1:]
    }
    for row in rows:  # the layers make up the global norm the clipper computed
        total = math.hypot(*row["grad_norm"])
        assert total == pytest.approx(recorded[row["step"]]["grad_norm_preclip"], rel=1e-5)
    assert all(r > 0 for row in rows if "update_ratio" in row for r in row["update_ratio"][:1])


def test_more_spikes_than_allowed_fail_as_spiking(spiky):
    strict = Spikes("loss", window=8, warmup=4, rtol=3.0, max_spikes=0, name="loss_spikes")
    failure = strict.check(Observation(spiky.stats))
    assert failure is not None and failure[0] is VerdictKind.SPIKING
    evidence = failure[1]
    assert evidence.step in {s["step"] for s in spiky.stats["spikes"]}
    assert "loud" in evidence.message and f"{SPIKY}" in evidence.message
    lenient = Spikes("loss", window=8, warmup=4, rtol=3.0, max_spikes=100, name="loss_spikes")
    assert lenient.check(Observation(spiky.stats)) is None


def test_replay_reproduces_a_recorded_step_to_the_bit(spiky, tmp_path):
    step = spiky.stats["spikes"][-1]["step"]
    result = replay(
        spiky.run_dir, step, out=tmp_path / "r", cache_dir=spiky.run_dir.parents[1] / "cache"
    )
    assert result.matches and result.start.startswith("epoch-")
    assert result.loss == spiky_row(spiky, step)["loss"]
    assert result.grad_norm_preclip == spiky_row(spiky, step)["grad_norm_preclip"]
    assert result.indices == spiky.stats["spikes"][-1]["batch"]
    assert max(result.layers, key=lambda t: t[1])[0] == "loud"
    with np.load(tmp_path / "r" / "batch.npz") as z:
        assert z["indices"].tolist() == result.indices and z["tensor_0"].shape == (4, 2, 8, 8)
    assert json.loads((tmp_path / "r" / "step.json").read_text())["matches_record"] is True


def spiky_row(result, step):
    for line in (result.run_dir / "steps.jsonl").read_text().splitlines()[1:]:
        row = json.loads(line)
        if row["step"] == step:
            return row
    raise AssertionError(step)


def test_replay_says_what_is_missing(spiky, tmp_path, capsys):
    cache = str(spiky.run_dir.parents[1] / "cache")
    code = main(["replay", str(spiky.run_dir), "--step", "3", "--cache", cache])
    err = capsys.readouterr().err  # a step of the first epoch: keeping checkpoints cannot help
    assert code == 2 and "step 3 comes before the first checkpoint (epoch 1, which ends at " in err
    assert "step 8); --from-start" in err and "--sk-keep-checkpoints" not in err
    bare = tmp_path / "bare"  # the run without its checkpoints
    shutil.copytree(spiky.run_dir, bare, ignore=shutil.ignore_patterns("checkpoints"))
    code = main(["replay", str(bare), "--step", "12", "--cache", cache])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint before step 12" in err and "--sk-keep-checkpoints" in err
    code = main(
        [
            "replay",
            str(spiky.run_dir),
            "--step",
            "3",
            "--from-start",
            "--cache",
            cache,
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert code == 0 and "matches the record" in capsys.readouterr().out
    code = main(["replay", str(spiky.run_dir), "--step", "999", "--cache", cache])
    assert code == 2 and "allowed: a step the run logged, 1..48" in capsys.readouterr().err


def test_the_detector_flags_a_jump_over_its_running_mean_once_warm():
    rows = [{"step": i + 1, "loss": 1.0} for i in range(20)]
    rows[5]["loss"] = 10.0  # inside the warm-up: not judged
    rows[12]["loss"] = 3.5  # 3.5 > 1 + 2.0 * 1 (the spread of a flat window is 0)
    rows[15]["loss"] = float("nan")  # the finite criterion's, not a spike
    rule = SpikeRule("loss", window=4, warmup=8, rtol=2.0)
    spikes = find_spikes(rows, [rule])
    assert [(s["step"], s["value"], s["baseline"]) for s in spikes] == [(13, 3.5, 1.0)]
    with pytest.raises(ValueError, match=r"SpikeRule.window: got 0; allowed: an int >= 1"):
        SpikeRule(window=0)
    with pytest.raises(ValueError, match=r"SpikeRule.signal: got 'lr'"):
        SpikeRule(signal="lr")
    with pytest.raises(ValueError, match=r"SpikeRule.sigmas: got -1; allowed: a finite number"):
        SpikeRule(sigmas=-1)
    with pytest.raises(ValueError, match=r"SpikeRule.log: got 1; allowed: True or False"):
        SpikeRule(log=1)
    with pytest.raises(ValueError, match=r"Spikes.max_spikes"):
        Spikes(max_spikes=-1)


def _grad_rows(n=600, sd=0.7, seed=0):
    """A grad-norm series that moves by factors every few steps (log-normal, median 0.5, log
    sd ``sd``: a 5 x move is ordinary), with a loss beside it."""
    rng = np.random.default_rng(seed)
    g = 0.5 * rng.lognormal(0.0, sd, n)
    loss = 0.1 * rng.lognormal(0.0, 0.1, n)
    return [
        {"step": i + 1, "epoch": i // 40 + 1, "loss": float(a), "grad_norm_preclip": float(b)}
        for i, (a, b) in enumerate(zip(loss, g, strict=True))
    ]


def test_a_series_is_judged_against_its_own_spread():
    rows = _grad_rows()
    values = [r["grad_norm_preclip"] for r in rows]
    means = [np.mean(values[max(0, i - 50) : i]) for i in range(10, len(values))]
    jumps = sum(v > 3 * m for v, m in zip(values[10:], means, strict=True))
    assert jumps >= 10  # what a fixed multiple of the mean (the old rule) called spikes
    assert find_spikes(rows, DEFAULT_RULES) == []
    rows[300]["grad_norm_preclip"] = 100 * 0.5  # 100 x the series' median: a spike
    rows[300]["loss"] = 10 * rows[299]["loss"]
    spikes = find_spikes(rows, DEFAULT_RULES)
    assert {(s["criterion"], s["step"]) for s in spikes} == {
        ("loss_spikes", 301),
        ("grad_norm_spikes", 301),
    }
    grad = next(s for s in spikes if s["signal"] == "grad_norm_preclip")
    assert grad["value"] > grad["limit"] > grad["baseline"] > 0 and grad["spread"] > 0


def test_a_flat_series_does_not_flag_its_noise():
    rows = [{"step": i + 1, "loss": 1.0 + 1e-7 * (-1) ** i} for i in range(100)]
    rows[60]["loss"] = 1.3  # thousands of standard deviations, but under the 50 % minimum jump
    rows[80]["loss"] = 1.6
    assert [s["step"] for s in find_spikes(rows, [LOSS_SPIKES])] == [81]


def test_a_series_that_settles_at_a_new_level_stops_being_flagged():
    rows = [{"step": i + 1, "loss": 1.0 + 0.01 * (i % 3)} for i in range(300)]
    for row in rows[100:]:
        row["loss"] *= 10
    steps = [s["step"] for s in find_spikes(rows, [LOSS_SPIKES])]
    assert steps[0] == 101  # the jump is flagged; the new level enters the window at the limit,
    assert steps == list(range(101, steps[-1] + 1)) and steps[-1] < 101 + LOSS_SPIKES.window
    # so the 200 steps at the new level are not flagged for ever


def test_warmup_does_not_hide_the_largest_excursion():
    rows = _grad_rows()
    rows[2]["grad_norm_preclip"] = 2407.0  # step 3: in the warm-up of 3 values
    assert GRAD_NORM_SPIKES.warmup == 3
    assert all(s["step"] != 3 for s in find_spikes(rows, DEFAULT_RULES))
    largest = summarise_steps(rows)["largest_excursion"]["grad_norm_preclip"]
    assert (largest["step"], largest["value"], largest["window"]) == (3, 2407.0, 2)
    assert largest["warmup"] is True and largest["flagged"] is False
    assert largest["jump"] == pytest.approx(2407.0 / largest["baseline"], rel=1e-12)
    assert largest["jump"] > 100
    rows[400]["grad_norm_preclip"] = 5000.0  # a larger one after the warm-up: flagged
    largest = largest_excursions(rows)["grad_norm_preclip"]
    assert (largest["step"], largest["warmup"], largest["flagged"]) == (401, False, True)


def test_online_detection_in_any_flushes_and_after_a_resume_equals_the_whole_run():
    rows = _grad_rows(n=300)
    rows[150]["grad_norm_preclip"] = 80.0
    whole = SpikeDetector(DEFAULT_RULES)
    expected = whole.feed(rows)
    assert expected and expected == find_spikes(rows, DEFAULT_RULES)
    online, found = SpikeDetector(DEFAULT_RULES), []
    for i in range(0, 140, 7):
        found += online.feed(rows[i : i + 7])
    state = json.loads(json.dumps(online.state_dict()))  # as a checkpoint keeps it
    resumed = SpikeDetector(DEFAULT_RULES)
    resumed.load_state_dict(state)
    found += resumed.feed(rows[140:])
    assert found == expected and resumed.largest() == whole.largest()
    with pytest.raises(ValueError, match="other spike rules"):
        SpikeDetector([LOSS_SPIKES]).load_state_dict(state)


def test_every_spike_is_counted_and_the_first_ones_kept_with_evidence(monkeypatch, tmp_path):
    import stabilitykit.train.layers as layers

    monkeypatch.setattr(layers, "MAX_RECORDED", 1)
    criteria = with_criteria(DEFAULT_CRITERIA, RULE)
    result = run_arm(
        ARM, out_dir=tmp_path, cache_dir=tmp_path / "cache", criteria=criteria, progress=False
    )
    kept = [s for s in result.stats["spikes"] if s["criterion"] == "loss_spikes"]
    holding = [i + 1 for i, b in enumerate(_batches(ARM.seed + 1, ARM.epochs)) if SPIKY in b]
    assert (
        len(kept) == 1
        and result.stats["spike_counts"]["loss_spikes"]
        == len([s for s in holding if s > RULE.warmup])
        > 1
    )
    strict = Spikes("loss", window=8, warmup=4, rtol=3.0, max_spikes=1, name="loss_spikes")
    assert strict.check(Observation(result.stats))[0] is VerdictKind.SPIKING
