"""Per-layer telemetry, spike detection with its evidence, and replay of a recorded step."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from stabilitykit import Arm, SupervisedWorkload, run_arm
from stabilitykit.cli import main
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Observation, Spikes, with_criteria
from stabilitykit.judge.spikes import SpikeRule, find_spikes
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.run_record import LAYERS
from stabilitykit.replay import replay

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
    assert code == 2 and "no checkpoint before step 3" in capsys.readouterr().err
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
    rows[12]["loss"] = 3.5  # 3.5 > 1 + 2.0 * 1
    rows[15]["loss"] = float("nan")  # the finite criterion's, not a spike
    rule = SpikeRule("loss", window=4, warmup=8, rtol=2.0)
    spikes = find_spikes(rows, [rule])
    assert [(s["step"], s["value"], s["baseline"]) for s in spikes] == [(13, 3.5, 1.0)]
    with pytest.raises(ValueError, match=r"SpikeRule.window: got 0; allowed: an int >= 1"):
        SpikeRule(window=0)
    with pytest.raises(ValueError, match=r"SpikeRule.signal: got 'lr'"):
        SpikeRule(signal="lr")
    with pytest.raises(ValueError, match=r"Spikes.max_spikes"):
        Spikes(max_spikes=-1)


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
