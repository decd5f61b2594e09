"""PNG plots of a stage: loss curves, per-step grad norms, reconstructions beside the ground truth.

Reconstructions come from each record's ``reconstruction.npz`` (prediction and ground truth, as
the workload saved them): complex images as amplitude and phase, real ones as one field. Nothing
here knows a particular workload.

Each function takes records by label and a path, writes one PNG and returns the path. Figures are
built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global backend).
Missing data never raises: a run with no steps, only non-finite values or no reconstruction gets
a note in its panel or no row.
"""

from __future__ import annotations

import os
import textwrap
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


def remove_plane(phi: np.ndarray) -> np.ndarray:
    """``phi`` minus its least-squares plane ``a*x + b*y + c`` (x: column, y: row index): on a
    full grid the centred coordinates and the constant are orthogonal, so three projections."""
    phi = np.asarray(phi, dtype=float)
    y = np.arange(phi.shape[0], dtype=float)[:, None]
    x = np.arange(phi.shape[1], dtype=float)[None, :]
    y, x = y - y.mean(), x - x.mean()
    sxx, syy = phi.shape[0] * np.sum(x**2), phi.shape[1] * np.sum(y**2)
    a = np.sum(phi * x) / sxx if sxx else 0.0
    b = np.sum(phi * y) / syy if syy else 0.0
    return phi - (a * x + b * y + phi.mean())


def _image(x: np.ndarray) -> np.ndarray | None:
    """``x`` as one 2-D image: singleton axes dropped, the first of any leading ones taken (a
    channel or sample axis); ``None`` when it is not an image."""
    x = np.squeeze(np.asarray(x))
    while x.ndim > 2:
        x = x[0]
    return x if x.ndim == 2 and x.size else None


def panels(pred: np.ndarray, truth: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, prediction, ground truth)`` per panel pair: a complex pair gives the amplitude
    and, when the truth has a phase beyond a plane, the phase with its plane removed; a real pair
    (a field such as a Darcy solution) gives itself."""
    if not (np.iscomplexobj(pred) or np.iscomplexobj(truth)):
        return [("field", np.asarray(pred, dtype=float), np.asarray(truth, dtype=float))]
    out = [("amplitude", np.abs(pred).astype(float), np.abs(truth).astype(float))]
    gt_phase = remove_plane(np.nan_to_num(np.angle(truth)))
    if np.std(gt_phase) > 1e-3:
        out.append(("phase", remove_plane(np.nan_to_num(np.angle(pred))), gt_phase))
    return out


def _reconstruction(rec: RunRecord) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        pair = rec.reconstruction()
    except (OSError, ValueError, KeyError):  # unreadable file: no panel
        return None
    if pair is None:
        return None
    pred, truth = _image(pair[0]), _image(pair[1])
    if pred is None or truth is None or pred.shape != truth.shape:
        return None
    return pred, truth


def _who(label: str, rec: RunRecord) -> tuple[str, str]:
    """``("control (seed 1)", "control-seed1-...")``: the row's name (the plot label and its
    seed) and its run folder."""
    arm = rec.arm if isinstance(rec.arm, dict) else {}
    seed = arm.get("seed", (rec.config.get("seeds") or {}).get("model_init"))
    short = label if seed is None or f"seed {seed}" in label else f"{label} (seed {seed})"
    return short, rec.path.name


def _range(truth: np.ndarray) -> tuple[float, float]:
    """The truth's finite min and max (widened when it is constant)."""
    gt = truth[np.isfinite(truth)]
    if not gt.size:
        return 0.0, 1.0
    lo, hi = float(gt.min()), float(gt.max())
    if hi <= lo:
        pad = max(abs(lo), 1.0) * 1e-3
        lo, hi = lo - pad, hi + pad
    return lo, hi


CMAPS = {"amplitude": "gray", "phase": "twilight", "field": "viridis"}


def plot_reconstructions(
    records_by_label: Mapping[str, RunRecord], path: str | os.PathLike
) -> Path:
    """One row per record with ``reconstruction.npz``: ground truth beside the prediction on the
    same colour range (the truth's min and max, one colour bar per pair); complex images give an
    amplitude pair and, when the truth has a phase beyond a plane, a phase pair (plane removed),
    real ones (a field) one pair. The title names each row's run and seed; records without a
    reconstruction are left out."""
    rows = []
    for label, rec in records_by_label.items():
        pair = _reconstruction(rec)
        if pair is not None:
            rows.append((_who(label, rec), panels(*pair)))
    if not rows:
        fig = Figure(figsize=(5, 2), layout="constrained")
        _empty(fig.subplots(), "no reconstruction recorded")
        return _save(fig, path)
    ncols = 2 * max(len(shown) for _, shown in rows)
    fig = Figure(figsize=(3.0 * ncols, 2.8 * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, ((name_of_row, run), shown) in enumerate(rows):
        for c in range(ncols):
            axes[r, c].set_axis_off()
        for j, (name, pred, truth) in enumerate(shown):
            lo, hi = _range(truth)
            pair = [axes[r, 2 * j], axes[r, 2 * j + 1]]
            for ax, image, title in (
                (pair[0], truth, "ground truth"),
                (pair[1], pred, "prediction"),
            ):
                ax.set_axis_on()
                ax.set_xticks([])
                ax.set_yticks([])
                shown_image = ax.imshow(
                    np.nan_to_num(image, nan=lo, posinf=hi, neginf=lo),
                    cmap=CMAPS.get(name, "viridis"),
                    vmin=lo,
                    vmax=hi,
                )
                ax.set_title(f"{title}: {name}", fontsize=8)
            fig.colorbar(shown_image, ax=pair, shrink=0.8)
        axes[r, 0].set_ylabel(f"{name_of_row}\nrun {textwrap.fill(run, 30)}", fontsize=7)
    if len(rows) == 1:
        (name_of_row, run), _ = rows[0]
        title = f"Reconstruction of {name_of_row}, run {run}"
    else:
        title = "Reconstructions, one row per run: " + "; ".join(n for (n, _), _ in rows)
    fig.suptitle(textwrap.fill(title, 45 * ncols // 2), fontsize=9)
    return _save(fig, path)
