"""Per-layer telemetry and the evidence of a spike, gathered as the loop runs.

Every ``every`` steps (the arm's ``layer_norm_every``), and at every step a spike rule flags, a
row goes to ``layers.jsonl``: each layer's gradient norm before clipping and, on the logged steps,
each layer's update-to-weight ratio ``||w_after - w_before|| / ||w_before||``. A layer is a
module that owns parameters (``blocks.0.spectral``); its norm is the L2 norm over its parameters.

Nothing is computed twice: the per-parameter norms are the ones the clipper computed for the
global norm (:meth:`~stabilitykit.train.clipping.Clipper.clip`); they are kept on the device
(one ``stack`` per step) until the loop flushes its step rows, so the telemetry adds no host
sync. Only logged steps copy the weights (for the update ratio).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stabilitykit.judge.spikes import SpikeDetector, SpikeRule
from stabilitykit.train.clipping import Clipped

#: How many layers a spike's evidence names (largest gradient norm first).
TOP_LAYERS = 3
#: Spikes kept with their evidence per rule (all are counted): a run that spikes on every step
#: must not turn its stats.json into megabytes.
MAX_RECORDED = 100
ROOT = "(root)"


def layer_names(model: nn.Module) -> tuple[list[str], dict[int, int]]:
    """The model's layers (modules that own parameters, registration order) and, for each
    parameter (by ``id``), the index of its layer."""
    names: list[str] = []
    index: dict[int, int] = {}
    for module_name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in index]
        if not own:
            continue
        names.append(module_name or ROOT)
        for p in own:
            index[id(p)] = len(names) - 1
    return names, index


@dataclass
class _Pending:
    epoch: int
    batch: Tensor
    norms: Tensor  # per parameter, on the device
    layer_of: Tensor  # per parameter: its layer's index
    update: Tensor | None = None  # per parameter ||delta||, logged steps only
    weight: Tensor | None = None  # per parameter ||w_before||


class LayerTelemetry:
    """Collects per-layer rows and spikes; ``sink`` receives the rows for ``layers.jsonl``.

    ``every`` = 0 logs no periodic rows (spikes still get theirs). ``rules``: the spike rules
    to run online (empty: no spike detection).
    """

    def __init__(
        self,
        model: nn.Module,
        every: int,
        rules: Sequence[SpikeRule],
        sink: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        self.every = every
        self.names, self._index = layer_names(model)
        self.detector = SpikeDetector(rules)
        self.sink = sink
        self.spikes: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {r.name: 0 for r in rules}
        self._pending: dict[int, _Pending] = {}
        self._layer_of: Tensor | None = None
        self._params_key: tuple[int, ...] = ()

    def header(self) -> dict[str, Any]:
        return {"layers": self.names, "every": self.every}

    def logs(self, step: int) -> bool:
        return self.every > 0 and (step - 1) % self.every == 0

    def snapshot(self, step: int, clipped: Clipped) -> list[Tensor] | None:
        """Before the optimiser step: a copy of the weights on a logged step, else ``None``."""
        if not self.logs(step) or not clipped.params:
            return None
        return [p.detach().clone() for p in clipped.params]

    def after_step(
        self,
        step: int,
        epoch: int,
        batch: Tensor,
        clipped: Clipped,
        before: list[Tensor] | None,
    ) -> None:
        """After the optimiser step: keep this step's per-parameter norms until its row is
        flushed (device tensors; no host sync)."""
        if not clipped.params:
            return
        pending = _Pending(epoch, batch, torch.stack(list(clipped.norms)), self._layers(clipped))
        if before is not None:
            with torch.no_grad():
                delta = torch._foreach_sub([p.detach() for p in clipped.params], before)
                pending.update = torch.stack(torch._foreach_norm(delta))
                pending.weight = torch.stack(torch._foreach_norm(before))
        self._pending[step] = pending

    def _layers(self, clipped: Clipped) -> Tensor:
        key = tuple(id(p) for p in clipped.params)
        if self._layer_of is None or key != self._params_key:
            self._params_key = key
            self._layer_of = torch.tensor(
                [self._index[id(p)] for p in clipped.params], device=clipped.norms[0].device
            )
        return self._layer_of

    def on_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """The loop flushed these step rows: find spikes, write the layer rows they and the
        logged steps need, drop the rest."""
        by_step: dict[int, list[dict[str, Any]]] = {}
        for spike in self.detector.feed(rows):
            self.counts[spike["criterion"]] = self.counts.get(spike["criterion"], 0) + 1
            if self.counts[spike["criterion"]] <= MAX_RECORDED:
                by_step.setdefault(spike["step"], []).append(spike)
        out: list[dict[str, Any]] = []
        for row in rows:
            step = row["step"]
            pending = self._pending.pop(step, None)
            if pending is None or not (self.logs(step) or step in by_step):
                continue
            norms = self._per_layer(pending.norms, pending.layer_of)
            layer_row: dict[str, Any] = {"step": step, "epoch": pending.epoch, "grad_norm": norms}
            if pending.update is not None and pending.weight is not None:
                update = self._per_layer(pending.update, pending.layer_of)
                weight = self._per_layer(pending.weight, pending.layer_of)
                layer_row["update_ratio"] = [
                    update_ratio(u, w) for u, w in zip(update, weight, strict=True)
                ]
            if step in by_step:
                layer_row["spike"] = True
                batch = [int(i) for i in pending.batch.cpu().tolist()]
                top = top_layers(self.names, norms)
                for spike in by_step[step]:
                    spike["batch"] = batch
                    spike["top_layers"] = top
                    self.spikes.append(spike)
            out.append(layer_row)
        # rows the loop never flushed (e.g. a run that stopped) keep nothing pending forever
        for step in [s for s in self._pending if s <= max((r["step"] for r in rows), default=0)]:
            del self._pending[step]
        if out:
            self.sink(out)

    def _per_layer(self, values: Tensor, layer_of: Tensor) -> list[float | None]:
        return [_number(v) for v in layer_norms(values, layer_of, len(self.names))]

    def state_dict(self) -> dict[str, Any]:
        """The detector's running windows and the spikes so far (for a checkpoint)."""
        return {
            "spikes": [dict(s) for s in self.spikes],
            "counts": dict(self.counts),
            "detector": self.detector.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spikes = [dict(s) for s in state.get("spikes", [])]
        self.counts.update(state.get("counts", {}))
        self.detector.load_state_dict(state.get("detector", {}))


def layer_norms(values: Tensor, layer_of: Tensor, n_layers: int) -> list[float]:
    """Per-parameter norms ``values`` combined into each layer's L2 norm (``layer_of``: each
    parameter's layer index), in float64, one host sync."""
    squares = torch.zeros(n_layers, dtype=torch.float64, device=values.device)
    squares.index_add_(0, layer_of, values.double().square())
    return squares.sqrt().cpu().tolist()


def top_layers(names: Sequence[str], norms: Sequence[float | None], k: int = TOP_LAYERS):
    """The ``k`` layers with the largest gradient norms, as ``[name, norm]`` pairs."""
    ranked = sorted(
        ((n, v) for n, v in zip(names, norms, strict=True) if v is not None),
        key=lambda t: -t[1],
    )
    return [[n, v] for n, v in ranked[:k]]


def update_ratio(update: float | None, weight: float | None) -> float | None:
    """``||delta w|| / ||w||`` of one layer; ``None`` when either norm is non-finite (``None``)
    or the weights are zero."""
    if update is None or weight is None or not weight > 0:
        return None
    return _number(update / weight)


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None
