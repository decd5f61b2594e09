from stabilitykit.frontier import frontiers
from stabilitykit.report.frontier import frontier_lines, summary_table, write_frontier_plot

WORKLOAD = {
    "name": "w",
    "primary_metric": "ssim",
    "metrics": [{"name": "ssim", "direction": "higher", "floor": "ssim_floor"}],
}


def rows(family, failures, values=(1e-3, 3e-3, 1e-2, 3e-2), seeds=3):
    """Stage rows of a sweep: value i fails in ``failures[i]`` of ``seeds`` seeds."""
    return [
        {
            "run": f"{family}-{v}-{s}",
            "seed": s,
            "verdict": "diverged" if s < k else "stable",
            "arm": {"lr": v, "sweep": [family, "lr"]},
            "workload": WORKLOAD,
            "ssim": None if s < k else 0.5 + 10 * v,
            "ssim_floor": 0.27,
            "final_val_loss": 0.1,
            "best_val_loss": 0.1,
            "initial_val_loss": 1.0,
        }
        for v, k in zip(values, failures, strict=True)
        for s in range(seeds)
    ]


def test_the_frontier_section_has_a_table_the_points_a_narrative_and_a_plot(tmp_path):
    stage_rows = rows("control", [0, 0, 3, 3]) + rows("agc", [0, 0, 0, 3])
    items = frontiers(stage_rows, reused={"control-0.001-0"})
    table = summary_table(items)
    assert table[2].startswith("| `control` | `lr` | 12 (1) | 0.001–0.003 | 0.003 (ssim 0.53) |")
    assert "0.00548 [0.003, 0.01], bracket 0.003–0.01" in table[2]
    assert "(ssim; capped at floor 0.27)" in table[2]
    plot = write_frontier_plot(items, stage_rows, tmp_path)
    assert plot == tmp_path / "frontier.png" and plot.stat().st_size > 0
    text = "\n".join(frontier_lines(items, plot, tmp_path))
    assert "## Frontier" in text and "![frontier](frontier.png)" in text
    assert "- `agc` moves the edge up from lr 0.00548 [0.003, 0.01] (`control`) to 0.0173" in text
    assert "| 0.01 | 3 | diverged 3 | 3/3 [0.65, 1.00] | 0.27 [0.27–0.27] | 0.1 | 0 |" in text
    assert frontier_lines([], None, tmp_path) == []  # a stage without sweeps: no section
