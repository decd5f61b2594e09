import struct

import numpy as np
import pytest

from stabilitykit.report.plots import (
    panels,
    plot_grad_norms,
    plot_losses,
    plot_reconstructions,
    remove_plane,
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
