"""PNG plots of a stage: loss curves, per-step grad norms, reconstructions beside the ground truth.

Loss and grad-norm plots draw one colour per arm: the seeds of an arm (records of one arm name,
family hash and stage) are one median line and a min–max band; a single run is its own line.
The legend sits outside the data, and explains every line style and marker (median, band, the
× of a non-finite step, the ○ of a spike). A spike (``stats["spikes"]``: a step whose loss or
pre-clip grad norm exceeded its rule's limit over the running mean) is a red ring at its value:
on the pre-clip grad-norm curve at its step, on the train-loss curve at its place in its epoch.
An arm whose runs recorded spikes also gets a bar chart of the per-layer grad norms at its worst
spike (:func:`spike_layers`, from the run's ``layers.jsonl``). Reconstructions come from each
record's ``reconstruction.npz``
(prediction and ground truth, as the workload saved them): complex images as amplitude and
phase, real ones as one field; each row names its arm, seed, verdict and run. Nothing here
knows a particular workload.

Each ``plot_*`` function takes records by label and a path, writes one PNG and returns the
path; its ``*_figure`` twin returns the :class:`matplotlib.figure.Figure` unsaved, to inspect.
Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global
backend). Missing data never raises: a run with no steps, only non-finite values or no
reconstruction gets a note in its panel or no row.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from stabilitykit.phase import remove_plane
from stabilitykit.record.run_record import LAYERS, RunRecord, read_layers
from stabilitykit.record.schema import RecordError
from stabilitykit.report.collate import family_hash, finite, spike_ratio


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


# --- arms over seeds ---------------------------------------------------------------------------


def _seed_of(rec: RunRecord) -> Any:
    arm = rec.arm if isinstance(rec.arm, dict) else {}
    return arm.get("seed", (rec.config.get("seeds") or {}).get("model_init"))


def _stem(label: str) -> str:
    """A label less its ``seed N`` suffix and the primes that keep labels unique."""
    return label.rstrip("'").split(" seed ")[0]


def _arm_key(label: str, rec: RunRecord) -> tuple[Any, ...]:
    """Runs of one arm: the label's stem (:func:`_stem`: a reference keeps its own label), the
    arm's name, its family hash (the hash without the seed) and stage; a record without an arm
    dict is its own arm."""
    arm = rec.arm if isinstance(rec.arm, dict) else {}
    family = family_hash(rec.config)
    if not arm.get("name") or family is None:
        return ("label", label)
    return _stem(label), arm["name"], family, (rec.config.get("tags") or {}).get("stage")


def _arm_label(labels: Sequence[str], recs: Sequence[RunRecord]) -> str:
    """One run: its label. Several seeds: the labels' stem and the seeds."""
    if len(recs) == 1:
        return labels[0]
    seeds = [_seed_of(r) for r in recs]
    shown = ", ".join(str(x) for x in seeds if x is not None)
    return f"{_stem(labels[0])} ({len(recs)} seeds{': ' + shown if shown else ''})"


def arm_groups(records_by_label: Mapping[str, RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    """``(label, records)`` per arm in order of first appearance: the seeds of one arm together
    (:func:`_arm_key`), labelled by :func:`_arm_label`."""
    groups: dict[tuple[Any, ...], tuple[list[str], list[RunRecord]]] = {}
    for label, rec in records_by_label.items():
        labels, recs = groups.setdefault(_arm_key(label, rec), ([], []))
        labels.append(label)
        recs.append(rec)
    return [(_arm_label(labels, recs), recs) for labels, recs in groups.values()]


def arm_colours(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 up to 10 arms, tab20 up to 20, then evenly from turbo."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def band(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, median, low, high)`` over the runs' ``(x, y)`` series at each x any run logged:
    the median, min and max of the runs with a value there."""
    by_x: dict[float, list[float]] = {}
    for xs, ys in series:
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            by_x.setdefault(x, []).append(y)
    if not by_x:
        empty = np.empty(0)
        return empty, empty, empty, empty
    xs = np.array(sorted(by_x), dtype=float)
    values = [np.asarray(by_x[x], dtype=float) for x in xs.tolist()]
    median = np.array([np.median(v) for v in values])
    low = np.array([v.min() for v in values])
    high = np.array([v.max() for v in values])
    return xs, median, low, high


def _draw_arm(
    ax: Axes, series: Sequence[tuple[np.ndarray, np.ndarray]], colour: Any, lw: float
) -> bool:
    """One arm: a single run as a line; several as the median (line) and min–max (band).
    Returns whether anything was drawn."""
    series = [(x, y) for x, y in series if x.size]
    if not series:
        return False
    if len(series) == 1:
        ax.plot(*series[0], lw=lw, color=colour)
        return True
    x, median, low, high = band(series)
    ax.fill_between(x, low, high, color=colour, alpha=0.25, lw=0)
    ax.plot(x, median, lw=lw, color=colour)
    return True


NONFINITE_MARKER = "x"


def _mark_nonfinite(ax: Axes, steps: Sequence[float], colour: Any) -> None:
    """An × in the arm's colour on the top edge of the axes at each non-finite step."""
    if not steps:
        return
    top = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(
        sorted(set(steps)),
        [0.97] * len(set(steps)),
        ls="none",
        marker=NONFINITE_MARKER,
        ms=6,
        mew=1.5,
        color=colour,
        transform=top,
        clip_on=False,
        gid="nonfinite",
    )


#: A spike: a red ring at its value (apart from the × of a non-finite step and any arm colour).
SPIKE_MARKER = "o"
SPIKE_COLOUR = "red"
_SPIKE_STYLE: dict[str, Any] = {
    "ls": "none",
    "marker": SPIKE_MARKER,
    "ms": 5,
    "mfc": "none",
    "mec": SPIKE_COLOUR,
    "mew": 1.2,
}


def record_spikes(rec: RunRecord) -> list[Mapping[str, Any]]:
    """The spikes ``rec`` recorded (``stats["spikes"]``); none for a record without them."""
    spikes = rec.stats.get("spikes")
    return [s for s in spikes if isinstance(s, Mapping)] if isinstance(spikes, list) else []


def _epoch_spans(rows: Sequence[Mapping[str, Any]]) -> dict[float, tuple[float, float]]:
    """Per epoch, its first and last logged step."""
    spans: dict[float, tuple[float, float]] = {}
    for r in rows:
        epoch, step = finite(r.get("epoch")), finite(r.get("step"))
        if epoch is None or step is None:
            continue
        first, last = spans.get(epoch, (step, step))
        spans[epoch] = (min(first, step), max(last, step))
    return spans


def _epoch_position(spans: Mapping[float, tuple[float, float]], step: float, epoch: float) -> float:
    """Where ``step`` of ``epoch`` falls on an epoch axis: ``epoch - 1`` plus its share of the
    epoch's logged steps (an epoch's train loss is drawn at ``epoch``, after its steps)."""
    if epoch not in spans:
        return float(epoch)
    first, last = spans[epoch]
    share = (step - first + 1) / (last - first + 1)
    return float(epoch - 1 + min(max(share, 0.0), 1.0))


def spike_points(rec: RunRecord, signal: str, x_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, value)`` of ``rec``'s spikes of ``signal`` with a positive finite value (a log
    axis): x the step, or on an epoch axis (``x_key == "epoch"``) the step's place in its
    epoch (:func:`_epoch_position`)."""
    spans = _epoch_spans(rec.steps) if x_key == "epoch" else {}
    xs, ys = [], []
    for spike in record_spikes(rec):
        step, epoch, value = (finite(spike.get(k)) for k in ("step", "epoch", "value"))
        if spike.get("signal") != signal or step is None or value is None or value <= 0:
            continue
        if x_key == "epoch":
            if epoch is None:
                continue
            xs.append(_epoch_position(spans, step, epoch))
        else:
            xs.append(float(step))
        ys.append(float(value))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


#: A run's largest excursion that no rule flagged (in warm-up, or under its limit): a grey diamond.
_EXCURSION_STYLE: dict[str, Any] = {
    "ls": "none",
    "marker": "D",
    "ms": 5,
    "mfc": "none",
    "mec": "0.35",
    "mew": 1.2,
}


def excursion_points(rec: RunRecord, signal: str, x_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, value)`` of ``rec``'s largest excursion of ``signal``
    (``stats["largest_excursion"]``) when no rule flagged it, placed as :func:`spike_points`
    places a spike; empty otherwise (flagged: it has its ring)."""
    block = rec.stats.get("largest_excursion")
    big = block.get(signal) if isinstance(block, Mapping) else None
    if not isinstance(big, Mapping) or big.get("flagged"):
        return np.empty(0), np.empty(0)
    step, epoch, value = (finite(big.get(k)) for k in ("step", "epoch", "value"))
    if step is None or value is None or value <= 0 or (x_key == "epoch" and epoch is None):
        return np.empty(0), np.empty(0)
    x = _epoch_position(_epoch_spans(rec.steps), step, epoch) if x_key == "epoch" else step
    return np.asarray([float(x)]), np.asarray([value])


def _mark_spikes(ax: Axes, xs: np.ndarray, ys: np.ndarray) -> bool:
    """A red ring at each spike's ``(x, value)``; returns whether there was one."""
    if not xs.size:
        return False
    ax.plot(xs, ys, **_SPIKE_STYLE, zorder=3, gid="spike")
    return True


def _legend(
    fig: Figure,
    arms: Sequence[tuple[str, Any]],
    banded: bool,
    nonfinite: bool,
    spikes: bool = False,
    excursions: bool = False,
) -> None:
    """The figure's legend, outside the axes on the right: one entry per arm (its colour), then
    what the styles mean: the median line and min–max band (when an arm has several seeds),
    the × of a non-finite step (when there is one), the ring of a spike (when there is one)."""
    if not arms:
        return
    handles: list[Any] = [Line2D([], [], color=c, lw=2) for _, c in arms]
    labels = [label for label, _ in arms]
    if banded:
        handles += [
            Line2D([], [], color="0.25", lw=1.5),
            Patch(facecolor="0.25", alpha=0.25, lw=0),
        ]
        labels += ["line: median over an arm's seeds", "band: min–max over its seeds"]
    if nonfinite:
        handles.append(
            Line2D([], [], ls="none", marker=NONFINITE_MARKER, color="0.25", ms=6, mew=1.5)
        )
        labels.append("×: non-finite at that step")
    if spikes:
        handles.append(Line2D([], [], **_SPIKE_STYLE))
        labels.append("○ spike: the value at a step a spike rule flagged")
    if excursions:
        handles.append(Line2D([], [], **_EXCURSION_STYLE))
        labels.append("◇ a run's largest jump over its running mean that no rule flagged")
    fig.legend(
        handles,
        [textwrap.fill(label, 36) for label in labels],
        loc="outside right upper",
        fontsize=7,
        frameon=False,
    )


def _finish(ax: Axes, drawn: bool, empty_text: str) -> None:
    if drawn:
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    else:
        _empty(ax, empty_text)


def _curves_figure(
    records_by_label: Mapping[str, RunRecord],
    source: str,
    panels_: Sequence[tuple[str, str]],
    x_key: str,
    lw: float,
    empty: str,
    spike_signals: Mapping[str, str] | None = None,
) -> Figure:
    """Two panels (``(y key, title)`` each) of one series per record from ``history`` or
    ``steps`` (``source``), drawn per arm (:func:`arm_groups`, :func:`_draw_arm`);
    ``spike_signals`` (y key -> spike signal): the panels whose curves get their arms' spikes
    marked (:func:`spike_points`)."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels_), sharey=True)
    groups = arm_groups(records_by_label)
    colours = arm_colours(len(groups))
    shown: dict[str, Any] = {}
    banded = nonfinite = spiked = excursed = False
    for ax, (key, title) in zip(axes, panels_, strict=True):
        drawn = False
        for (label, recs), colour in zip(groups, colours, strict=True):
            rows = [getattr(rec, source) for rec in recs]
            series = [_series(r, x_key, key) for r in rows]
            if _draw_arm(ax, series, colour, lw):
                drawn = True
                shown[label] = colour
                banded |= sum(1 for x, _ in series if x.size) > 1
                signal = (spike_signals or {}).get(key)
                if signal is not None:
                    points = [spike_points(rec, signal, x_key) for rec in recs]
                    xs = np.concatenate([x for x, _ in points])
                    spiked |= _mark_spikes(ax, xs, np.concatenate([y for _, y in points]))
                    big = [excursion_points(rec, signal, x_key) for rec in recs]
                    bx = np.concatenate([x for x, _ in big])
                    if bx.size:
                        ys = np.concatenate([y for _, y in big])
                        ax.plot(bx, ys, **_EXCURSION_STYLE, zorder=3, gid="excursion")
                        excursed = True
            if source == "steps":
                bad = [s for r in rows for s in _nonfinite_steps(r, key)]
                _mark_nonfinite(ax, bad, colour)
                if bad:
                    shown.setdefault(label, colour)
                    nonfinite = True
        ax.set_title(title)
        ax.set_xlabel(x_key)
        if x_key == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(ax, drawn, empty.format(title=title))
    order = [(label, c) for (label, _), c in zip(groups, colours, strict=True) if label in shown]
    _legend(fig, order, banded, nonfinite, spiked, excursed)
    return fig


def _losses_differ(records: Sequence[RunRecord]) -> bool:
    """Whether the records' losses measure different things (another workload or loss)."""
    bases = set()
    for rec in records:
        arm = rec.arm if isinstance(rec.arm, dict) else {}
        block = rec.config.get("workload")
        workload = arm.get("workload") or (block.get("name") if isinstance(block, dict) else None)
        bases.add((workload, arm.get("loss")))
    return len(bases) > 1


def loss_figure(records_by_label: Mapping[str, RunRecord]) -> Figure:
    """Train (left) and val (right) loss per epoch, log y, one colour per arm (median and
    min–max band over its seeds); a loss spike is a red ring at its step's loss, placed within
    its epoch on the train-loss panel. When the arms' losses differ (another workload or loss)
    the title says their curves do not compare."""
    fig = _curves_figure(
        records_by_label,
        "history",
        (("train_loss", "train loss"), ("val_loss", "val loss")),
        "epoch",
        1.5,
        "no finite {title} logged",
        {"train_loss": "loss"},
    )
    if _losses_differ(list(records_by_label.values())):
        fig.suptitle(
            "Each arm's own training loss: the arms' losses or workloads differ, so their "
            "levels do not compare",
            fontsize=9,
        )
    return fig


def plot_losses(records_by_label: Mapping[str, RunRecord], path: str | os.PathLike) -> Path:
    """:func:`loss_figure`, written to ``path``."""
    return _save(loss_figure(records_by_label), path)


def grad_norm_figure(records_by_label: Mapping[str, RunRecord]) -> Figure:
    """Global gradient L2 norm per step before (left) and after (right) clipping, log y, one
    colour per arm (median and min–max band over its seeds); an × on the top edge marks a step
    whose norm was non-finite, a red ring on the pre-clip curve a grad-norm spike."""
    return _curves_figure(
        records_by_label,
        "steps",
        (
            ("grad_norm_preclip", "grad norm before clipping"),
            ("grad_norm_postclip", "grad norm after clipping"),
        ),
        "step",
        0.9,
        "no finite grad norm logged",
        {"grad_norm_preclip": "grad_norm_preclip"},
    )


def plot_grad_norms(records_by_label: Mapping[str, RunRecord], path: str | os.PathLike) -> Path:
    """:func:`grad_norm_figure`, written to ``path``."""
    return _save(grad_norm_figure(records_by_label), path)


# --- per-layer grad norms at the worst spike ----------------------------------------------------

#: The most layers a spike's bar chart shows (the largest, in the model's order).
MAX_BARS = 24
SPIKE_LAYERS = "spike_layers"  # the file names' prefix: ``spike_layers-<arm>.png``


@dataclass(frozen=True)
class SpikeLayers:
    """An arm's worst spike and the per-layer grad norms at it. ``arm``: the arm's plot label
    (:func:`arm_groups`); ``stem``: a file name for its chart, unique among a stage's;
    ``record``: the run of that spike; ``layers``: ``(name, grad norm)`` in the model's order;
    ``complete``: every layer (from ``layers.jsonl``), else only the spike's top layers."""

    arm: str
    stem: str
    record: RunRecord
    spike: Mapping[str, Any]
    layers: tuple[tuple[str, float], ...]
    complete: bool


def layer_norms_at(
    rec: RunRecord, spike: Mapping[str, Any]
) -> tuple[list[tuple[str, float]], bool]:
    """``(layers, complete)``: each layer's grad norm at ``spike``'s step from the spike's row
    of ``rec``'s ``layers.jsonl`` (``complete``), else the spike's own ``top_layers`` (the
    largest few); non-finite norms left out. An unreadable ``layers.jsonl`` counts as none."""
    try:
        names, rows = read_layers(rec.path / LAYERS)
    except (RecordError, OSError):
        names, rows = [], []
    for row in rows:
        if row.get("spike") and row.get("step") == spike.get("step") and "grad_norm" in row:
            pairs = zip(names, row["grad_norm"], strict=True)
            return [(n, float(v)) for n, v in pairs if finite(v) is not None], True
    top = spike.get("top_layers") if isinstance(spike.get("top_layers"), list) else []
    pairs = [t for t in top if isinstance(t, (list, tuple)) and len(t) == 2]
    return [(str(n), float(v)) for n, v in pairs if finite(v) is not None], False


def _file_stem(label: str, rec: RunRecord, taken: set[str]) -> str:
    """``spike_layers-<arm name>``: the name made safe for a file, unique among ``taken``."""
    arm = rec.arm if isinstance(rec.arm, dict) else {}
    name = str(arm.get("name") or _stem(label))
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:48] or "arm"
    stem, n = f"{SPIKE_LAYERS}-{slug}", 1
    while stem in taken:
        n += 1
        stem = f"{SPIKE_LAYERS}-{slug}-{n}"
    taken.add(stem)
    return stem


def spike_layers(records_by_label: Mapping[str, RunRecord]) -> list[SpikeLayers]:
    """One :class:`SpikeLayers` per arm (:func:`arm_groups`) whose runs recorded a spike: its
    worst (largest ``value / limit`` over its seeds, as the ``Spikes`` criterion ranks them)
    with the per-layer grad norms at it (:func:`layer_norms_at`). Arms without spikes, or whose
    worst spike has no per-layer norms, get none: only they would have a chart to show."""
    out: list[SpikeLayers] = []
    taken: set[str] = set()
    for label, recs in arm_groups(records_by_label):
        candidates = [(rec, spike) for rec in recs for spike in record_spikes(rec)]
        if not candidates:
            continue
        rec, spike = max(candidates, key=lambda c: spike_ratio(c[1]))
        layers, complete = layer_norms_at(rec, spike)
        if layers:
            stem = _file_stem(label, rec, taken)
            out.append(SpikeLayers(label, stem, rec, spike, tuple(layers), complete))
    return out


def _g(x: Any) -> str:
    value = finite(x)
    return "?" if value is None else f"{value:.4g}"


def spike_layers_figure(item: SpikeLayers) -> Figure:
    """A bar per layer: its pre-clip grad norm at the arm's worst spike, in the model's order
    (top to bottom), the largest in red; the :data:`MAX_BARS` largest when there are more. The
    title names the arm, seed, run, step and the spike's value against its running mean, and
    says when only the spike's top layers were recorded."""
    layers = list(item.layers)
    if len(layers) > MAX_BARS:
        keep = set(sorted(range(len(layers)), key=lambda i: -layers[i][1])[:MAX_BARS])
        layers = [pair for i, pair in enumerate(layers) if i in keep]
    names = [n for n, _ in layers]
    norms = np.array([v for _, v in layers], dtype=float)
    fig = Figure(figsize=(6.4, 1.6 + 0.22 * len(layers)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(layers))
    colours = ["0.55"] * len(layers)
    colours[int(np.argmax(norms))] = SPIKE_COLOUR
    ax.barh(y, norms, color=colours)
    ax.set_yticks(y, labels=[textwrap.shorten(n, 40, placeholder="…") for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("grad norm before clipping (L2 over the layer's parameters)", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    s = item.spike
    seed = _seed_of(item.record)
    what = {"grad_norm_preclip": "pre-clip grad norm"}.get(str(s.get("signal")), s.get("signal"))
    title = (
        f"{item.arm}: worst spike at step {s.get('step')} (epoch {s.get('epoch')}), {what} "
        f"{_g(s.get('value'))} vs running mean {_g(s.get('baseline'))} (limit "
        f"{_g(s.get('limit'))}); seed {seed if seed is not None else '?'}, run "
        f"{item.record.path.name}"
    )
    if not item.complete:
        title += f". Only the spike's top {len(item.layers)} layers were recorded"
    elif len(item.layers) > len(layers):
        title += f". The {len(layers)} largest of {len(item.layers)} layers"
    fig.suptitle(textwrap.fill(title, 80), fontsize=8)
    return fig


def plot_spike_layers(item: SpikeLayers, path: str | os.PathLike) -> Path:
    """:func:`spike_layers_figure`, written to ``path``."""
    return _save(spike_layers_figure(item), path)


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
    seed = _seed_of(rec)
    short = label if seed is None or f"seed {seed}" in label else f"{label} (seed {seed})"
    return short, rec.path.name


def row_label(label: str, rec: RunRecord) -> str:
    """The label of a reconstruction row: ``arm control · seed 1 · stable`` and its run
    folder (wrapped), so a reader knows which of an arm's seeds the row shows."""
    arm = rec.arm if isinstance(rec.arm, dict) else {}
    name = arm.get("name") or label.split(" seed ")[0]
    seed = _seed_of(rec)
    verdict = rec.verdict.kind.value
    head = f"arm {name}" if label == name or label.startswith(f"{name} ") else label
    return (
        f"{head}\nseed {seed if seed is not None else '?'} · {verdict}\n"
        f"run {textwrap.fill(rec.path.name, 30)}"
    )


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
    """:func:`reconstruction_figure`, written to ``path``."""
    return _save(reconstruction_figure(records_by_label), path)


def reconstruction_figure(records_by_label: Mapping[str, RunRecord]) -> Figure:
    """One row per record with ``reconstruction.npz``: ground truth beside the prediction on the
    same colour range (the truth's min and max, one colour bar per pair); complex images give an
    amplitude pair and, when the truth has a phase beyond a plane, a phase pair (plane removed),
    real ones (a field) one pair. Each row is labelled with its arm, seed, verdict and run
    (:func:`row_label`), and the title names each row's run and seed; records without a
    reconstruction are left out."""
    rows = []
    for label, rec in records_by_label.items():
        pair = _reconstruction(rec)
        if pair is not None:
            rows.append((_who(label, rec), row_label(label, rec), panels(*pair)))
    if not rows:
        fig = Figure(figsize=(5, 2), layout="constrained")
        _empty(fig.subplots(), "no reconstruction recorded")
        return fig
    ncols = 2 * max(len(shown) for _, _, shown in rows)
    fig = Figure(figsize=(3.0 * ncols, 2.8 * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))
    for r, (_, ylabel, shown) in enumerate(rows):
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
        axes[r, 0].set_ylabel(ylabel, fontsize=8)
    if len(rows) == 1:
        (name_of_row, run), _, _ = rows[0]
        title = f"Reconstruction of {name_of_row}, run {run}"
    else:
        title = "Reconstructions, one row per run: " + "; ".join(n for (n, _), _, _ in rows)
    fig.suptitle(textwrap.fill(title, 45 * ncols // 2), fontsize=9)
    return fig
