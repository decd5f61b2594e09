"""Synthetic run folders for the report tests (written with :class:`RunWriter`)."""

from __future__ import annotations

import numpy as np
import pytest

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, new_run_dir, read_record

GOOD_STATS = {
    "status": "completed",
    "train_seconds": 12.5,
    "epochs_completed": 3,
    "initial_val_loss": 0.2,
    "best_val_loss": 0.0138,
    "best_val_epoch": 3,
    "final_val_loss": 0.0138,
    "steps": 6,
    "nonfinite": False,
    "nonfinite_step": None,
    "grad_norm_preclip_min": 0.5,
    "grad_norm_preclip_median": 8.56,
    "grad_norm_preclip_p99": 22.85,
    "grad_norm_preclip_max": 39.9,
    "grad_norm_preclip_max_step": 4,
    "grad_norm_postclip_min": 0.5,
    "grad_norm_postclip_median": 1.0,
    "grad_norm_postclip_p99": 1.0,
    "grad_norm_postclip_max": 1.0,
    "parameters": 123456,
}
GOOD_METRICS = {
    "amp_mae": 0.063,
    "amp_ssim": 0.925,
    "amp_psnr": 25.0,
    "amp_frc50": 12,
    "phase_ssim": None,
    "phase_mae": None,
    "phase_vacuous": True,
    "amp_ssim_floor": 0.277,
    "pred_amp_std": 0.2,
    "gt_amp_std": 0.21,
}


def _metric(name, label, direction, tol, floor=None, rel=None):
    return {
        "name": name,
        "label": label,
        "direction": direction,
        "abs_tol": tol,
        "rel_tol": rel,
        "floor": floor,
    }


# The workload blocks of config.json, as the engine writes them (Workload.describe()).
GRIDLINES = {
    "name": "gridlines",
    "fingerprint": "0123456789abcdef",
    "primary_metric": "amp_ssim",
    "metrics": [
        _metric("amp_ssim", "amp SSIM", "higher", 0.035, "amp_ssim_floor"),
        _metric("phase_ssim", "phase SSIM", "higher", 0.015),
        _metric("amp_mae", "amp MAE", "lower", 0.015),
        _metric("phase_mae", "phase MAE", "lower", 0.025),
        _metric("amp_psnr", "amp PSNR", "higher", None),  # judged, no gate tolerance
    ],
    "diagnostics": [
        "amp_frc50",
        "amp_ssim_floor",
        "pred_amp_std",
        "gt_amp_std",
        "phase_vacuous",
    ],
    "collapse_std": ["pred_amp_std", "gt_amp_std"],
    "architectures": {
        "hybrid": {"width": 32, "fno_blocks": 4, "max_channels": None},
        "stable_hybrid": {
            "width": 32,
            "fno_blocks": 4,
            "max_channels": None,
            "layerscale_init": 1e-3,
        },
        "cnn": {"width": 32, "levels": 4},
    },
    "mitigations": [
        {
            "text": "LayerScale on the residual branches",
            "changes": {"architecture": "stable_hybrid", "layerscale_init": 1e-3},
        }
    ],
}
DARCY = {
    "name": "darcy",
    "fingerprint": "fedcba9876543210",
    "primary_metric": "rel_l2",
    "metrics": [
        _metric("rel_l2", "rel L2", "lower", None, "rel_l2_floor", rel=0.2),
        _metric("mse", "MSE", "lower", None, rel=0.5),
    ],
    "diagnostics": ["rel_l2_floor", "pred_std", "true_std"],
    "collapse_std": ["pred_std", "true_std"],
}
WORKLOADS = {"gridlines": GRIDLINES, "darcy": DARCY}
DARCY_METRICS = {"rel_l2": 0.12, "rel_l2_floor": 0.97, "mse": 0.0031, "pred_std": 0.9}


def steps_rows(n: int = 6, grad: float = 8.56) -> list[dict]:
    return [
        {
            "step": i,
            "epoch": 1 + i // 2,
            "lr": 1e-3,
            "loss": 0.2 / (i + 1),
            "grad_norm_preclip": grad * (1 + i),
            "grad_norm_postclip": 1.0,
        }
        for i in range(n)
    ]


def history_rows(epochs: int = 3) -> list[dict]:
    rows = [{"epoch": 0, "train_loss": None, "val_loss": 0.2, "lr": 1e-3, "seconds": 0.0}]
    rows += [
        {"epoch": e, "train_loss": 0.1 / e, "val_loss": 0.05 / e, "lr": 1e-3, "seconds": 1.0}
        for e in range(1, epochs + 1)
    ]
    return rows


def complex_object(phase: bool, n: int = 24) -> np.ndarray:
    y, x = np.mgrid[:n, :n]
    amp = 0.5 + 0.4 * ((x // 4 + y // 4) % 2)
    return amp * np.exp(1j * (np.sin(x / 3.0) if phase else 0.0))


def darcy_field(n: int = 24) -> np.ndarray:
    """A real field, as a Darcy solution: smooth, zero on the boundary."""
    y, x = np.mgrid[:n, :n] / (n - 1)
    return np.sin(np.pi * x) * np.sin(np.pi * y) * (1 + 0.3 * x)


def truth_of(kind: str) -> np.ndarray:
    return darcy_field() if kind == "field" else complex_object(phase=kind == "phase")


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, seed=..., verdict=..., ...) -> RunRecord``; ``finish=False`` leaves a
    half-written run (no stats.json). ``workload`` is the config's ``workload`` block
    (a name in :data:`WORKLOADS`, ``gridlines`` by default, or a block; ``None``: a record
    written before the block existed, whose arm names no workload either);
    ``reconstruction`` one of ``amplitude``, ``phase`` (complex) or ``field`` (real);
    ``scale_changes`` the config's ``{field: [as written, as run]}`` (``None``: left out, as a
    record written before configs carried it); ``tags`` the config's tags (e.g. ``{"expect":
    "diverged"}``); ``layers`` a ``layers.jsonl`` as ``(header, rows)``. Spikes go in
    ``stats={"spikes": [...]}`` (left out: a record written before spike detection)."""

    def make(
        name: str = "control",
        *,
        seed: int = 1,
        verdict: str = "stable",
        evidence: tuple[Evidence, ...] = (),
        stats: dict | None = None,
        metrics: dict | None = None,
        arm: dict | None = None,
        steps: list[dict] | None = None,
        history: list[dict] | None = None,
        reconstruction: str | None = "amplitude",
        finish: bool = True,
        root=None,
        data_hash: str = "data0123",
        scale: str = "ci",
        workload: str | dict | None = "gridlines",
        scale_changes: dict | None = None,
        tags: dict | None = None,
        layers: tuple[dict, list[dict]] | None = None,
    ):
        block = WORKLOADS.get(workload) if isinstance(workload, str) else workload
        arm_dict = {
            "name": name,
            **({"workload": block["name"]} if block else {}),
            "architecture": "hybrid",
            "width": None,
            "fno_blocks": 4,
            "layerscale_init": None,
            "optimizer": "adam",
            "lr": 1e-3,
            "betas": [0.9, 0.999],
            "loss": "rel_l2" if block is DARCY else "mae",
            "clip": "norm",
            "clip_value": 1.0,
            "scheduler": "constant",
            "epochs": 3,
            "batch_size": 16,
            "seed": seed,
            "device": "cpu",
            "scale": scale,
            "data": {"N": 64, "seed": 7},
            **(arm or {}),
        }
        writer = RunWriter(new_run_dir(root or tmp_path, f"{name}-seed{seed}"))
        config = {
            "arm": arm_dict,
            "arm_id": f"{name}-hybrid-b{arm_dict['fno_blocks']}-seed{seed}",
            "arm_hash": f"hash{name}{seed}",
            "scale": scale,
            "seeds": {"model_init": seed, "shuffle": seed + 1, "data": 7},
            "device": "cpu",
            "data_hash": data_hash,
            "parameters": 123456,
        }
        if block is not None:
            config["workload"] = block
        if scale_changes is not None:
            config["scale_changes"] = scale_changes
        if tags is not None:
            config["tags"] = tags
        writer.write_config(config)
        writer.append_steps(steps_rows() if steps is None else steps)
        writer.write_history(history_rows() if history is None else history)
        if layers is not None:
            writer.append_layers(*layers)
        if reconstruction is not None:
            truth = truth_of(reconstruction)
            writer.save_reconstruction(truth * 0.9 + 0.01, truth)
        if finish:
            base = DARCY_METRICS if block is DARCY else GOOD_METRICS
            writer.write_metrics({**base, **(metrics or {})})
            writer.write_stats(
                {**GOOD_STATS, **(stats or {})}, Verdict(VerdictKind(verdict), evidence)
            )
        writer.close()
        return read_record(writer.path)

    return make


LAYER_NAMES = ["lift", "blocks.0.spectral", "blocks.1.spectral", "project"]


def spike(step, signal="loss", value=0.8, baseline=0.2, limit=0.4, top=None):
    """One entry of ``stats["spikes"]``, as the training loop records it."""
    return {
        "criterion": "loss_spikes" if signal == "loss" else "grad_norm_spikes",
        "signal": signal,
        "step": step,
        "epoch": 1 + step // 2,
        "value": value,
        "baseline": baseline,
        "limit": limit,
        "batch": [3, 17, 42],
        "top_layers": top or [["blocks.1.spectral", 30.0], ["project", 4.0], ["lift", 1.0]],
    }


def layer_file(spike_steps, norms=(1.0, 2.0, 30.0, 4.0)):
    """``(header, rows)`` of a ``layers.jsonl``: a periodic row at step 0, a spike row at each
    of ``spike_steps`` (grad norms ``norms``, one per :data:`LAYER_NAMES`)."""
    rows = [{"step": 0, "epoch": 1, "grad_norm": [0.1] * 4, "update_ratio": [1e-3] * 4}]
    rows += [
        {"step": s, "epoch": 1 + s // 2, "grad_norm": list(norms), "spike": True}
        for s in spike_steps
    ]
    return {"layers": LAYER_NAMES, "every": 50}, rows


@pytest.fixture
def make_spike():
    """:func:`spike`, for tests (a conftest is not importable under ``--import-mode=importlib``)."""
    return spike


@pytest.fixture
def make_layers():
    """:func:`layer_file`, for tests."""
    return layer_file
