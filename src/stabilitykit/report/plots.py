"""PNG plots of a stage: loss curves, per-step grad norms, reconstructions beside the ground truth.

Each function takes records by label and a path, writes one PNG and returns the path. Figures are
built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global backend).
Missing data never raises: a run with no steps, only non-finite values or no reconstruction gets
a note in its panel or no row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stabilitykit.record.run_record import RunRecord
from stabilitykit.report.collate import finite


def _series(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the rows where both are finite and ``y > 0`` (plotted on a log axis)."""
    pairs = [(finite(r.get(x)), finite(r.get(y))) for r in rows]
    kept = [(a, b) for a, b in pairs if a is not None and b is not None and b > 0]
    if not kept:
        return np.empty(0), np.empty(0)
    xs, ys = zip(*kept, strict=True)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _nonfinite_steps(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for r in rows:
        step = finite(r.get("step"))
        if r.get(key) is not None and finite(r[key]) is None and step is not None:
            out.append(float(step))
    return out


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def _finish(ax: Axes, drawn: bool, empty_text: str) -> None:
    if drawn:
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    else:
        _empty(ax, empty_text)


def plot_losses(records_by_label: Mapping[str, RunRecord], path: str | os.PathLike) -> Path:
    """Train (left) and val (right) loss per epoch, one line per record, log y."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in zip(
        axes, ("train_loss", "val_loss"), ("train loss", "val loss"), strict=True
    ):
        drawn = False
        for i, (label, rec) in enumerate(records_by_label.items()):
            x, y = _series(rec.history, "epoch", key)
            if x.size:
                ax.plot(x, y, marker="." if x.size < 30 else None, color=f"C{i % 10}", label=label)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(ax, drawn, f"no finite {title} logged")
    return _save(fig, path)


def plot_grad_norms(records_by_label: Mapping[str, RunRecord], path: str | os.PathLike) -> Path:
    """Global gradient L2 norm per step before (left) and after (right) clipping, log y; a red
    tick marks a step whose norm was non-finite."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, ("preclip", "postclip"), strict=True):
        key, drawn = f"grad_norm_{kind}", False
        for i, (label, rec) in enumerate(records_by_label.items()):
            x, y = _series(rec.steps, "step", key)
            if x.size:
                ax.plot(x, y, lw=0.7, color=f"C{i % 10}", label=label)
                drawn = True
            for step in _nonfinite_steps(rec.steps, key):
                ax.axvline(step, color="red", lw=0.8, ls=":")
        ax.set_title(f"grad norm {'before' if kind == 'preclip' else 'after'} clipping")
        ax.set_xlabel("step")
        _finish(ax, drawn, "no finite grad norm logged")
    return _save(fig, path)


def _phase(image: np.ndarray) -> np.ndarray:
    from stabilitykit.evaluate.metrics import remove_plane

    return remove_plane(np.angle(image))


def _shown(pred: np.ndarray, truth: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Amplitude (the prediction rescaled as the metrics rescale it) and, when the ground truth
    has a phase, plane-removed phase: ``(name, prediction, ground truth)``."""
    from stabilitykit.evaluate.metrics import rescale_amplitude

    pred_amp, gt_amp = np.abs(pred).astype(float), np.abs(truth).astype(float)
    out = [("amplitude", rescale_amplitude(pred_amp, gt_amp), gt_amp)]
    if np.iscomplexobj(truth) and np.std(_phase(truth)) > 1e-3:
        out.append(("phase", _phase(pred), _phase(truth)))
    return out


def _reconstruction(rec: RunRecord) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        pair = rec.reconstruction()
    except (OSError, ValueError, KeyError):  # unreadable file: no panel
        return None
    if pair is None or np.ndim(pair[0]) != 2 or np.shape(pair[0]) != np.shape(pair[1]):
        return None
    return pair


def plot_reconstructions(
    records_by_label: Mapping[str, RunRecord], path: str | os.PathLike
) -> Path:
    """One row per record with a reconstruction: ground truth and prediction of the amplitude,
    and of the phase when it is not vacuous; records without one are left out."""
    rows = []
    for label, rec in records_by_label.items():
        pair = _reconstruction(rec)
        if pair is not None:
            vacuous = rec.metrics.get("phase_vacuous") is True
            shown = _shown(*pair)
            rows.append((label, shown[:1] if vacuous else shown))
    if not rows:
        fig = Figure(figsize=(5, 2), layout="constrained")
        _empty(fig.subplots(), "no reconstruction recorded")
        return _save(fig, path)
    ncols = 2 * max(len(shown) for _, shown in rows)
    fig = Figure(figsize=(2.6 * ncols, 2.6 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, (label, shown) in enumerate(rows):
        for c in range(ncols):
            axes[r, c].set_axis_off()
        for j, (name, pred, truth) in enumerate(shown):
            gt = truth[np.isfinite(truth)]
            lo, hi = (float(gt.min()), float(gt.max())) if gt.size else (None, None)
            cmap = "twilight" if name == "phase" else "gray"
            for k, (image, who) in enumerate(((truth, "ground truth"), (pred, label))):
                ax = axes[r, 2 * j + k]
                ax.imshow(np.nan_to_num(image), cmap=cmap, vmin=lo, vmax=hi)
                ax.set_title(f"{who}: {name}", fontsize=8)
    return _save(fig, path)
