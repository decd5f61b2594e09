"""Replay one step of a recorded run: the batch, its loss and every layer's gradient norm.

``stabilitykit replay RUN --step S`` rebuilds the run's arm, model and optimiser, loads the last
checkpoint that ends before step S (kept with ``--sk-keep-checkpoints`` / ``keep_checkpoints``;
``--from-start`` replays from the seeded initial model instead), trains deterministically up to
step S and stops after its backward pass and clipping, before the optimiser step. It writes to
``RUN/replays/step-S/`` (or ``--out``):

    step.json   the loss and global gradient norms at S, what the record logged for S, whether
                they match (on the CPU, to the last bit), and each layer's and parameter's
                pre-clip gradient norm
    batch.npz   the batch: ``indices`` (sample indices in the training split) and ``tensor_<i>``

The replay runs on the run's device with its torch thread count (CPU numbers depend on it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stabilitykit.arm import Arm
from stabilitykit.cache import default_cache_dir
from stabilitykit.record.run_record import CHECKPOINTS, read_record
from stabilitykit.record.schema import RecordError, stamp, write_json
from stabilitykit.run import check_device, code_fingerprint, seeds, setup_for
from stabilitykit.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.fast import FastPath
from stabilitykit.train.layers import layer_names, layer_norms, top_layers
from stabilitykit.train.loop import Hooks, StepView, train

REPLAYS = "replays"


@dataclass
class Replay:
    """What a replay found at its step; ``folder`` holds the files."""

    folder: Path
    step: int
    epoch: int
    start: str  # the checkpoint it started from, or "start"
    loss: float
    grad_norm_preclip: float
    grad_norm_postclip: float
    recorded: dict[str, Any]
    layers: list[list[Any]] = field(default_factory=list)  # [name, pre-clip grad norm]
    indices: list[int] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        """Loss and pre-clip grad norm equal to what the record logged at this step."""
        keys = [k for k in ("loss", "grad_norm_preclip") if k in self.recorded]
        return bool(keys) and all(_same(self.recorded[k], getattr(self, k)) for k in keys)


def _same(recorded: Any, value: float) -> bool:
    if isinstance(recorded, str):  # NaN and infinities are logged as strings
        return str(value) == recorded or (recorded == "nan" and math.isnan(value))
    return recorded == value


def replay(
    run_dir: str | os.PathLike,
    step: int,
    *,
    out: str | os.PathLike | None = None,
    from_start: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Replay:
    """Replay ``step`` of the run in ``run_dir`` (see the module's docs); ``ValueError`` naming
    the run and what is missing when it cannot."""
    run_dir = Path(run_dir)
    try:
        record = read_record(run_dir)
    except (RecordError, OSError) as exc:
        raise ValueError(f"replay {run_dir}: not a readable run folder ({exc})") from None
    config = record.config
    try:
        arm = Arm.from_dict(config.get("arm") or {})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"replay {run_dir}: its arm cannot be rebuilt here ({exc})") from None
    if arm.hash != config.get("arm_hash"):
        raise ValueError(
            f"replay {run_dir}: the arm's hash is {arm.hash} with the code here, "
            f"{config.get('arm_hash')} in the record (the workload's code changed since the "
            "run): a replay would not reproduce it"
        )
    if config.get("code_fingerprint") != code_fingerprint():
        raise ValueError(
            f"replay {run_dir}: run by other engine code (code fingerprint "
            f"{config.get('code_fingerprint')} != {code_fingerprint()})"
        )
    logged = {r["step"]: r for r in record.steps if isinstance(r.get("step"), int)}
    if isinstance(step, bool) or not isinstance(step, int) or step not in logged:
        last = max(logged, default=0)
        raise ValueError(
            f"replay {run_dir}: --step got {step!r}; allowed: a step the run logged, 1..{last}"
        )
    state, start = _checkpoint_before(run_dir, step, from_start)
    check_device(arm.device, field=f"replay {run_dir}: the run's device")
    folder = Path(out) if out is not None else run_dir / REPLAYS / f"step-{step}"
    threads = config.get("torch_threads")
    previous = torch.get_num_threads()
    if isinstance(threads, int) and threads >= 1:
        torch.set_num_threads(threads)
    try:
        fast = FastPath(**(config.get("fast_path") or {}))  # the run's options, for its numbers
        return _replay(arm, step, state, start, logged[step], folder, cache_dir, fast)
    finally:
        torch.set_num_threads(previous)


def _checkpoint_before(
    run_dir: Path, step: int, from_start: bool
) -> tuple[dict[str, Any] | None, str]:
    found = list_checkpoints(run_dir / CHECKPOINTS)
    first_step = None
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            raise ValueError(f"replay {run_dir}: {exc}") from None
        first_step = int(state["step"])
        if first_step < step:
            return state, path.name
    if from_start:
        return None, "start"
    kept = [e for e, _ in found]
    if kept:  # the run kept its checkpoints; the step comes before the first of them
        raise ValueError(
            f"replay {run_dir}: step {step} comes before the first checkpoint (epoch {kept[0]}, "
            f"which ends at step {first_step}); --from-start replays it from the seeded initial "
            "model"
        )
    raise ValueError(
        f"replay {run_dir}: no checkpoint before step {step} in {run_dir / CHECKPOINTS} "
        f"(epochs kept: {kept or 'none'}; a run keeps every epoch's with "
        "--sk-keep-checkpoints or run_arm(keep_checkpoints=True)); --from-start replays from "
        "the seeded initial model instead"
    )


def _replay(
    arm: Arm,
    step: int,
    state: dict[str, Any] | None,
    start: str,
    recorded: dict[str, Any],
    folder: Path,
    cache_dir: str | os.PathLike | None,
    fast: FastPath,
) -> Replay:
    workload = arm.workload_impl
    device = torch.device(arm.device)
    data = workload.build_data(
        arm.data, Path(cache_dir) if cache_dir is not None else default_cache_dir()
    )
    torch.manual_seed(seeds(arm)["model_init"])
    model = workload.build_model(data, arm.architecture, **arm.model_kwargs()).to(device)
    setup = setup_for(arm, data, model, Clipper(arm.clip, arm.clip_value), device, fast)
    seen: list[StepView] = []
    hooks = Hooks(resume=state, stop_after=step, inspect=seen.append)
    with fast.applied(device):
        outcome = train(setup, lambda rows: None, lambda row: None, None, hooks)
    if outcome.status != "stopped" or not seen:
        raise ValueError(
            f"replay: training ended {outcome.status} before step {step}"
            + (f" ({outcome.error})" if outcome.error else "")
        )
    view = seen[0]
    names, index = layer_names(model)
    param_names = {id(p): n for n, p in model.named_parameters()}
    values = torch.stack(list(view.clipped.norms))
    norms = values.double().cpu().tolist()
    layer_of = torch.tensor([index[id(p)] for p in view.clipped.params], device=values.device)
    layers = [[n, v] for n, v in zip(names, layer_norms(values, layer_of, len(names)), strict=True)]
    result = Replay(
        folder=folder,
        step=step,
        epoch=view.epoch,
        start=start,
        loss=float(view.loss.detach().float()),
        grad_norm_preclip=float(view.clipped.preclip.float()),
        grad_norm_postclip=float(view.clipped.postclip.float()),
        recorded={k: v for k, v in recorded.items() if k != "lr"},
        layers=layers,
        indices=[int(i) for i in view.indices.cpu().tolist()],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"tensor_{i}": t.detach().cpu().numpy() for i, t in enumerate(view.batch)}
    np.savez(folder / "batch.npz", indices=np.asarray(result.indices), **tensors)
    write_json(
        folder / "step.json",
        stamp(
            {
                "step": step,
                "epoch": result.epoch,
                "started_from": start,
                "loss": result.loss,
                "grad_norm_preclip": result.grad_norm_preclip,
                "grad_norm_postclip": result.grad_norm_postclip,
                "recorded": result.recorded,
                "matches_record": result.matches,
                "batch_indices": result.indices,
                "layers": [{"name": n, "grad_norm": v} for n, v in layers],
                "top_layers": top_layers(names, [v for _, v in layers]),
                "parameters": [
                    {"name": param_names.get(id(p), "?"), "grad_norm": v}
                    for p, v in zip(view.clipped.params, norms, strict=True)
                ],
            }
        ),
    )
    return result
