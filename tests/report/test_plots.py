import struct

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from stabilitykit.report.plots import (
    arm_groups,
    band,
    grad_norm_figure,
    loss_figure,
    panels,
    plot_grad_norms,
    plot_losses,
    plot_reconstructions,
    plot_spike_layers,
    reconstruction_figure,
    remove_plane,
    spike_layers,
    spike_layers_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def degenerate(make_run):
    nan_steps = [
        {"step": i, "epoch": 1, "lr": 1e-3, "loss": "nan", "grad_norm_preclip": "nan"}
        for i in range(3)
    ]
    nan_history = [{"epoch": e, "train_loss": "nan", "val_loss": "inf"} for e in range(3)]
    return {
        "no steps": make_run("empty", steps=[], history=[], reconstruction=None),
        "all nan": make_run("nan", steps=nan_steps, history=nan_history, reconstruction=None),
        "half written": make_run("half", finish=False, reconstruction=None),
    }


@pytest.mark.parametrize("plot", [plot_losses, plot_grad_norms, plot_reconstructions])
def test_plots_write_pngs(make_run, tmp_path, plot):
    records = {"control": make_run("control"), "deep": make_run("deep", seed=2)}
    path = plot(records, tmp_path / "plots" / "out.png")
    assert path == tmp_path / "plots" / "out.png"
    width, height = png_size(path)
    assert width > 300 and height > 300 and path.stat().st_size > 5_000


@pytest.mark.parametrize("plot", [plot_losses, plot_grad_norms, plot_reconstructions])
def test_plots_survive_degenerate_runs(degenerate, tmp_path, plot):
    assert png_size(plot(degenerate, tmp_path / "a.png"))[0] > 0
    assert png_size(plot({}, tmp_path / "b.png"))[0] > 0


def test_grad_norms_mark_non_finite_steps_without_crashing(make_run, tmp_path):
    steps = [
        {"step": i, "epoch": 1, "lr": 1e-3, "loss": 0.1, "grad_norm_preclip": v}
        for i, v in enumerate([1.0, 2.0, "inf", 0.0])
    ]
    assert png_size(plot_grad_norms({"x": make_run("x", steps=steps)}, tmp_path / "g.png"))


def test_reconstruction_rows_and_phase_panels(make_run, tmp_path):
    amplitude_only = make_run("amp")  # complex, constant phase: nothing to show of it
    with_phase = make_run("phase", reconstruction="phase")
    missing = make_run("none", reconstruction=None)
    one = png_size(plot_reconstructions({"a": amplitude_only, "n": missing}, tmp_path / "1.png"))
    two = png_size(
        plot_reconstructions({"a": amplitude_only, "b": amplitude_only}, tmp_path / "2.png")
    )
    phase = png_size(plot_reconstructions({"p": with_phase}, tmp_path / "3.png"))
    assert two[1] > one[1]  # one row per record with a reconstruction; the missing one skipped
    assert phase[0] > one[0]  # a real phase adds ground-truth and prediction panels


def test_a_real_field_gives_one_pair_on_the_truths_colour_range(make_run, tmp_path):
    darcy = make_run("darcy", workload="darcy", reconstruction="field")
    pred, truth = darcy.reconstruction()
    ((name, _, shown_truth),) = panels(pred, truth)
    assert name == "field" and np.array_equal(shown_truth, truth)
    path = plot_reconstructions({"darcy": darcy}, tmp_path / "field.png")
    width, height = png_size(path)
    amplitude = png_size(plot_reconstructions({"a": make_run("a")}, tmp_path / "amp.png"))
    assert (width, height) == amplitude  # one panel pair, as an amplitude-only image
    mixed = png_size(
        plot_reconstructions(
            {"d": darcy, "p": make_run("p", reconstruction="phase")}, tmp_path / "mix.png"
        )
    )
    assert mixed[1] > height  # rows of different workloads in one figure


def test_the_figure_says_which_run_and_seed_and_shares_the_colour_range(
    make_run, monkeypatch, tmp_path
):
    from matplotlib.figure import Figure

    drawn = {}
    real_save = Figure.savefig

    def capture(fig, *args, **kwargs):
        drawn["fig"] = fig
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    rec = make_run("deep", seed=7, reconstruction="phase")
    plot_reconstructions({"deep": rec}, tmp_path / "r.png")
    fig = drawn["fig"]
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "deep (seed 7)" in title and rec.path.name[:20] in title.replace(" ", "")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 4  # amplitude and phase, truth and prediction each
    for truth, pred in (images[:2], images[2:]):
        assert truth.get_clim() == pred.get_clim()  # same colour range per pair
    _, truth = rec.reconstruction()
    assert images[0].get_clim() == (np.abs(truth).min(), np.abs(truth).max())
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 2


def test_remove_plane_takes_out_a_tilt():
    y, x = np.mgrid[:16, :20]
    bumps = np.sin(x / 2.0) * np.cos(y / 3.0)
    flat = remove_plane(bumps + 0.3 * x - 0.1 * y + 2.0)
    np.testing.assert_allclose(flat, remove_plane(bumps), atol=1e-12)
    assert abs(flat.mean()) < 1e-12


def noisy_steps(seed: int, n: int = 40, level: float = 5.0, nonfinite_at: int | None = None):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pre = level * float(np.exp(rng.normal(0, 0.5)))
        rows.append(
            {
                "step": i,
                "epoch": 1 + i // 10,
                "lr": 1e-3,
                "loss": 0.1,
                "grad_norm_preclip": "nan" if i == nonfinite_at else pre,
                "grad_norm_postclip": "nan" if i == nonfinite_at else min(pre, 1.0),
            }
        )
        if i == nonfinite_at:
            break
    return rows


@pytest.fixture
def three_seeds(make_run):
    """Two arms over three seeds, labelled as the stage report labels them."""
    records = {}
    for name, arm, level in (("control", {}, 5.0), ("hot", {"lr": 1e-2}, 50.0)):
        for seed in (1, 2, 3):
            records[f"{name} seed {seed}"] = make_run(
                name, seed=seed, arm=arm, steps=noisy_steps(10 * seed + len(name), level=level)
            )
    return records


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_a_three_seed_stage_draws_one_line_and_one_band_per_arm(three_seeds, tmp_path):
    groups = arm_groups(three_seeds)
    assert [(label, len(recs)) for label, recs in groups] == [
        ("control (3 seeds: 1, 2, 3)", 3),
        ("hot (3 seeds: 1, 2, 3)", 3),
    ]
    fig = grad_norm_figure(three_seeds)
    for ax in _data_axes(fig):
        assert len(ax.lines) == 2  # the median of each arm, not 6 seed lines
        assert len(ax.collections) == 2  # the min–max band of each arm
        assert ax.get_legend() is None  # no legend over the data
        colours = [line.get_color() for line in ax.lines]
        assert len(set(colours)) == 2  # one colour per arm
        bands = [tuple(c.get_facecolor()[0][:3]) for c in ax.collections]
        assert len(set(bands)) == 2
    (legend,) = fig.legends  # one legend, outside the axes
    texts = [t.get_text().replace("\n", " ") for t in legend.get_texts()]
    assert texts[:2] == ["control (3 seeds: 1, 2, 3)", "hot (3 seeds: 1, 2, 3)"]
    assert any("median over an arm's seeds" in t for t in texts)
    assert any("min–max over its seeds" in t for t in texts)
    assert not any("non-finite" in t for t in texts)  # nothing non-finite: not explained
    FigureCanvasAgg(fig).draw()
    box = legend.get_window_extent()
    assert all(box.x0 >= ax.get_window_extent().x1 for ax in _data_axes(fig))
    assert png_size(plot_grad_norms(three_seeds, tmp_path / "g.png"))[0] > 0


def test_the_band_is_the_min_and_max_over_the_seeds_and_the_line_their_median():
    a = (np.array([0.0, 1.0, 2.0]), np.array([1.0, 4.0, 2.0]))
    b = (np.array([0.0, 1.0]), np.array([3.0, 2.0]))
    c = (np.array([0.0, 1.0]), np.array([2.0, 8.0]))
    x, median, low, high = band([a, b, c])
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_array_equal(median, [2, 4, 2])  # at step 2 only one seed logged
    np.testing.assert_array_equal(low, [1, 2, 2])
    np.testing.assert_array_equal(high, [3, 8, 2])


def test_losses_of_three_seeds_draw_one_line_per_arm(three_seeds):
    fig = loss_figure(three_seeds)
    for ax in _data_axes(fig):
        assert len(ax.lines) == 2 and len(ax.collections) == 2 and ax.get_legend() is None
    assert fig._suptitle is None  # one loss: the curves compare


def test_a_non_finite_step_is_a_marker_the_legend_explains(make_run):
    records = {
        "stable": make_run("stable", steps=noisy_steps(1)),
        "diverged": make_run("diverged", steps=noisy_steps(2, nonfinite_at=20)),
    }
    fig = grad_norm_figure(records)
    pre = _data_axes(fig)[0]
    marks = [line for line in pre.lines if line.get_gid() == "nonfinite"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [20.0]
    assert marks[0].get_marker() == "x" and marks[0].get_linestyle() == "None"
    assert len(pre.lines) == 3  # two single runs and the marker; no unexplained dotted lines
    assert not [line for line in pre.lines if line.get_linestyle() == ":"]
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == ["stable", "diverged"] and "×: non-finite at that step" in texts
    assert not any("median" in t for t in texts)  # single runs: no band to explain


def test_each_reconstruction_row_names_its_arm_and_seed(make_run):
    records = {
        "control seed 2": make_run("control", seed=2),
        "hot seed 3 (diverged)": make_run("hot", seed=3, verdict="diverged"),
        "stage_a/control": make_run("control", seed=1),
    }
    fig = reconstruction_figure(records)
    labels = [ax.get_ylabel() for ax in _data_axes(fig) if ax.get_ylabel()]
    assert len(labels) == 3
    assert labels[0].startswith("arm control\nseed 2 · stable\nrun control-seed2-")
    assert labels[1].startswith("arm hot\nseed 3 · diverged\nrun hot-seed3-")
    assert labels[2].startswith("stage_a/control\nseed 1 · stable")


def test_arms_of_different_losses_get_a_loss_plot_that_says_so(make_run):
    records = {"mae": make_run("mae"), "poisson": make_run("poisson", arm={"loss": "poisson"})}
    title = loss_figure(records)._suptitle.get_text()
    assert "losses or workloads differ" in title


def test_a_reference_stays_its_own_line_beside_the_seeds_of_the_same_recipe(make_run):
    records = {
        "stage_a/control": make_run("control", seed=1),
        "control seed 1": make_run("control", seed=1),
        "control seed 2": make_run("control", seed=2),
    }
    assert [(label, len(recs)) for label, recs in arm_groups(records)] == [
        ("stage_a/control", 1),
        ("control (2 seeds: 1, 2)", 2),
    ]


# --- spikes ------------------------------------------------------------------------------------


@pytest.fixture
def spiky(make_run, make_spike, make_layers):
    """A loss spike at step 2 (epoch 2 of the conftest's steps: steps 2 and 3) and a grad-norm
    spike at step 4 (the worst: 4 × its limit), with a ``layers.jsonl`` row at each."""
    spikes = [
        make_spike(2, value=0.3, baseline=0.1, limit=0.2),
        make_spike(4, signal="grad_norm_preclip", value=160.0, baseline=20.0, limit=40.0),
    ]
    layers = make_layers([2, 4], norms=(1.0, 150.0, 20.0, 5.0))
    return make_run("spiky", stats={"spikes": spikes}, layers=layers)


def _spike_marks(ax):
    return [line for line in ax.lines if line.get_gid() == "spike"]


def test_spikes_are_marked_on_their_curves_and_explained_once(spiky, make_run):
    records = {"spiky": spiky, "calm": make_run("calm", stats={"spikes": []})}
    pre, post = _data_axes(grad_norm_figure(records))
    (mark,) = _spike_marks(pre)  # the grad-norm spike, at its step and value
    assert list(mark.get_xdata()) == [4.0] and list(mark.get_ydata()) == [160.0]
    assert mark.get_linestyle() == "None" and mark.get_markeredgecolor() == "red"
    assert not _spike_marks(post)  # the optimiser got the clipped norm: nothing to mark
    fig = loss_figure(records)
    train, val = _data_axes(fig)
    (mark,) = _spike_marks(train)  # the loss spike, at step 2's place in epoch 2 (steps 2, 3)
    assert list(mark.get_xdata()) == [1.5] and list(mark.get_ydata()) == [0.3]
    assert not _spike_marks(val)
    (legend,) = fig.legends
    texts = [t.get_text().replace("\n", " ") for t in legend.get_texts()]
    assert sum("spike" in t for t in texts) == 1


def test_a_largest_excursion_no_rule_flagged_is_marked_apart_from_the_spikes(make_run):
    big = {"step": 3, "epoch": 2, "value": 2407.0, "flagged": False, "warmup": True}
    hidden = make_run("deep", stats={"spikes": [], "largest_excursion": {"grad_norm_preclip": big}})
    flagged = make_run(
        "agc",
        stats={"spikes": [], "largest_excursion": {"grad_norm_preclip": {**big, "flagged": True}}},
    )
    fig = grad_norm_figure({"deep": hidden, "agc": flagged})
    pre, post = _data_axes(fig)
    (mark,) = [line for line in pre.lines if line.get_gid() == "excursion"]  # deep's only
    assert list(mark.get_xdata()) == [3.0] and list(mark.get_ydata()) == [2407.0]
    assert not [line for line in post.lines if line.get_gid() == "excursion"]
    (legend,) = fig.legends
    assert any("largest jump" in t.get_text().replace("\n", " ") for t in legend.get_texts())


def test_no_spike_no_mark_and_no_legend_entry(make_run):
    records = {"old": make_run("old"), "calm": make_run("calm", stats={"spikes": []})}
    for fig in (grad_norm_figure(records), loss_figure(records)):
        assert not [m for ax in _data_axes(fig) for m in _spike_marks(ax)]
        (legend,) = fig.legends
        assert not any("spike" in t.get_text() for t in legend.get_texts())


def test_the_bar_chart_is_only_for_an_arm_with_spikes(spiky, make_run, tmp_path):
    records = {
        "spiky": spiky,
        "calm": make_run("calm", stats={"spikes": []}),
        "old": make_run("old"),
    }
    (item,) = spike_layers(records)
    assert item.arm == "spiky" and item.stem == "spike_layers-spiky" and item.complete
    assert item.spike["step"] == 4  # the worst: furthest past its limit
    assert item.layers == (
        ("lift", 1.0),
        ("blocks.0.spectral", 150.0),
        ("blocks.1.spectral", 20.0),
        ("project", 5.0),
    )  # every layer at that step, from layers.jsonl, in the model's order
    path = plot_spike_layers(item, tmp_path / "plots" / f"{item.stem}.png")
    assert png_size(path)[0] > 300
    assert spike_layers({"calm": records["calm"], "old": records["old"]}) == []
    (ax,) = spike_layers_figure(item).axes
    norms = [bar.get_width() for bar in ax.patches]
    assert norms == [1.0, 150.0, 20.0, 5.0]
    assert [bar.get_facecolor()[:3] for bar in ax.patches].count((1.0, 0.0, 0.0)) == 1


def test_the_bar_chart_falls_back_to_the_spikes_top_layers(make_run, make_spike):
    top = [["blocks.3.spectral", 9.0], ["lift", 2.0]]
    rec = make_run("nolayers", stats={"spikes": [make_spike(3, top=top)]})  # no layers.jsonl
    seeds = {
        "nolayers seed 1": rec,
        "nolayers seed 2": make_run("nolayers", seed=2, stats={"spikes": []}),
    }
    (item,) = spike_layers(seeds)  # one chart per arm, from the seed that spiked
    assert item.arm == "nolayers (2 seeds: 1, 2)" and item.record is rec
    assert not item.complete and item.layers == (("blocks.3.spectral", 9.0), ("lift", 2.0))
    title = spike_layers_figure(item)._suptitle.get_text().replace("\n", " ")
    assert "top 2 layers" in title and "seed 1" in title and "step 3" in title
