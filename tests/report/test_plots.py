import struct

import pytest

from stabilitykit.report.plots import plot_grad_norms, plot_losses, plot_reconstructions

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
    amplitude_only = make_run("amp")
    with_phase = make_run("phase", reconstruction="phase", metrics={"phase_vacuous": False})
    vacuous = make_run("vac", reconstruction="phase", metrics={"phase_vacuous": True})
    missing = make_run("none", reconstruction=None)
    one = png_size(plot_reconstructions({"a": amplitude_only, "n": missing}, tmp_path / "1.png"))
    two = png_size(plot_reconstructions({"a": amplitude_only, "b": vacuous}, tmp_path / "2.png"))
    phase = png_size(plot_reconstructions({"p": with_phase}, tmp_path / "3.png"))
    assert two[1] > one[1]  # one row per record with a reconstruction; the missing one skipped
    assert two[0] == one[0]  # a vacuous phase adds no panel
    assert phase[0] > one[0]  # a real phase adds ground-truth and prediction panels
