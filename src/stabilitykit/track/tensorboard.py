"""TensorBoard: one run per arm and seed, ``<logdir>/<stage>/<run folder>``, written with
``torch.utils.tensorboard`` as the run goes.

Scalars: :data:`~stabilitykit.track.base.STEP_KEYS` per step, the layers' grad norms and update
ratios at their steps, :data:`~stabilitykit.track.base.EPOCH_KEYS` at each epoch's last step,
``final/<metric>`` at the end. The arm's fields and the verdict go to the HParams view (the
final metrics as its metrics), spikes as text at their step, the verdict and the code under
test as text. A resumed run (or an export of a run already written) starts with a purge of
every earlier event (``purge_step=0``) and replays its record: no step twice, none missing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stabilitykit.record.run_record import RunRecord
from stabilitykit.track.base import (
    EPOCH_KEYS,
    STEP_KEYS,
    TrackedRun,
    final_metrics,
    flat_params,
    layer_tag,
    number,
    verdict_tags,
)

EXTRA = "tensorboard"
#: Seconds between flushes of the event file: a live run shows its curves this late at most.
FLUSH_SECS = 10


class TensorBoardTracker:
    """Writes a run under ``logdir`` (:mod:`stabilitykit.track.tensorboard`)."""

    name = "tensorboard"

    def __init__(self, logdir: str | os.PathLike, flush_secs: int = FLUSH_SECS) -> None:
        check_available()
        self.logdir = Path(logdir)
        self.flush_secs = flush_secs
        self.writer: Any = None
        self.run: TrackedRun | None = None

    def start(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        folder = self.logdir / run.stage / run.path.name
        resumed = run.resumed or folder.is_dir()
        if resumed:
            _after_earlier_files(folder)
        self.writer = SummaryWriter(
            str(folder), flush_secs=self.flush_secs, purge_step=0 if resumed else None
        )
        self.writer.add_text("run/tags", _markdown_table(run.tags), 0)
        code = run.config.get("code")
        if code:
            self.writer.add_text("run/code", f"```\n{json.dumps(code, indent=1)}\n```", 0)

    def steps(self, rows: Sequence[dict[str, Any]]) -> None:
        add = self.writer.add_scalar
        for row in rows:
            step = row.get("step")
            for key, tag in STEP_KEYS.items():
                value = number(row.get(key))
                if value is not None:
                    add(tag, value, step)

    def layers(self, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        add = self.writer.add_scalar
        for row in rows:
            for kind in ("grad_norm", "update_ratio"):
                for layer, value in zip(names, row.get(kind) or (), strict=False):
                    if number(value) is not None:
                        add(layer_tag(kind, layer), value, row["step"])

    def epoch(self, row: dict[str, Any], step: int) -> None:
        for key, tag in EPOCH_KEYS.items():
            value = number(row.get(key))
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def finish(self, record: RunRecord) -> None:
        from torch.utils.tensorboard.summary import hparams

        last = max((r["step"] for r in record.steps if isinstance(r.get("step"), int)), default=0)
        metrics = final_metrics(record)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, last)
        for spike in record.stats.get("spikes") or ():
            if isinstance(spike, dict) and isinstance(spike.get("step"), int):
                self.writer.add_text("spikes", _spike_text(spike), spike["step"])
        verdict = verdict_tags(record)
        self.writer.add_text("verdict", _markdown_table(verdict), last)
        params = {**_hparam_values(flat_params(record.config)), **verdict}
        params.update({k: v for k, v in _run_tags(record).items() if k not in params})
        params.pop("verdict_reason", None)  # long text: shown as text, not a column
        # written into this run's own event file (add_hparams would make a run of its own)
        exp, ssi, sei = hparams(params, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


def _after_earlier_files(folder: Path) -> None:
    """Wait (under a second) until a new event file sorts after ``folder``'s: readers take
    files in name order, ``events.out.tfevents.<seconds>.<host>.<pid>``, and the purge of the
    earlier events must come after them."""
    stamps = [
        int(p.name.split(".")[3])
        for p in folder.glob("events.out.tfevents.*")
        if p.name.split(".")[3].isdigit()
    ]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


def _run_tags(record: RunRecord) -> dict[str, str]:
    tags = TrackedRun(record.path, record.config).tags
    return {k: tags[k] for k in ("stage", "workload", "numerics", "git_commit") if k in tags}


def _hparam_values(params: dict[str, Any]) -> dict[str, Any]:
    """Values the HParams view accepts: numbers, strings and bools (others as text)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = "none" if value is None else json.dumps(value)
    return out


def _markdown_table(values: dict[str, Any]) -> str:
    rows = "".join(f"| {k} | {str(v).replace('|', '/')} |\n" for k, v in values.items())
    return "| | |\n|---|---|\n" + rows


def _spike_text(spike: dict[str, Any]) -> str:
    fields = ("criterion", "signal", "value", "limit", "baseline", "epoch", "top_layers")
    return _markdown_table({k: spike[k] for k in fields if k in spike})


def check_available() -> None:
    """``ImportError`` naming the extra to install when TensorBoard is not installed."""
    from stabilitykit.track import missing_extra

    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise missing_extra(EXTRA, "TensorBoard", exc) from None


def log_stage_images(logdir: str | os.PathLike, stage: str, session: str, files: dict) -> None:
    """The stage report's plots (``*.png`` among ``files``) as images of the run
    ``<logdir>/<stage>/summary-<session>``."""
    import numpy as np
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(logdir) / stage / f"summary-{session}")) as writer:
        for key, path in sorted(files.items()):
            if str(path).endswith(".png"):
                image = imread(path)[..., :3]
                writer.add_image(f"stage/{key}", np.ascontiguousarray(image), 0, dataformats="HWC")
