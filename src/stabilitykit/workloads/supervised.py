"""A supervised regression workload from arrays: the base of Darcy flow and of a user's own.

Fill ``name``, :meth:`SupervisedWorkload.arrays` (inputs and targets as numpy arrays) and
:meth:`~stabilitykit.workload.Workload.build_model`; the rest is here: the cached data set, the
``rel_l2``/``mse`` losses, the relative L2 error with the mean-target floor, the collapse stds and
a picture of one test sample (docs/workloads.md)::

    class Heat(SupervisedWorkload):
        name = "heat"

        def arrays(self, spec):
            return {"x_train": ..., "y_train": ..., "x_test": ..., "y_test": ...}

        def build_model(self, data, architecture, **kwargs):
            return MyOperator()
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from stabilitykit import cache
from stabilitykit.workload import (
    Batch,
    Evaluation,
    LossFn,
    MetricSpec,
    Tensors,
    Workload,
    WorkloadError,
    fingerprint,
    spec_dict,
)

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SupervisedData:
    """Inputs ``x`` ``(n, C_in, ...)`` and targets ``y`` ``(n, C_out, ...)``, float32, and the
    per-position mean and std of the training inputs and targets (for ``normalize``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    data_hash: str

    def stats(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over the training samples of ``x_train`` or ``y_train`` (std >= 1e-6)."""
        array = getattr(self, key)
        return array.mean(axis=0), np.maximum(array.std(axis=0), 1e-6)


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``||prediction - target|| / ||target||`` (per-sample L2 over every
    other dim), the FNO paper's error; ``(n, ...)`` -> 0-d."""
    diff = (prediction - target).flatten(1).norm(dim=1)
    return (diff / target.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((prediction - target) ** 2)


LOSSES = {"rel_l2": relative_l2, "mse": mse}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _beyond_float32(a: np.ndarray) -> str | None:
    """What is wrong when a value of ``a`` is beyond float32's range (it would be stored as
    ``inf``): the first such value and its index; else ``None``."""
    beyond = np.abs(a) > FLOAT32_MAX
    if not beyond.any():
        return None
    index = tuple(int(i) for i in np.argwhere(beyond)[0])
    return (
        f"value {a[index].item()!r} at index {index} is beyond float32's range "
        f"(|x| <= {FLOAT32_MAX:.4g}); the data set is stored as float32"
    )


class SupervisedWorkload(Workload):
    """Regression ``x -> y`` from arrays. ``normalize = True`` standardises the inputs per
    position with training statistics and has the model predict standardised targets, which
    the loss and metrics decode first (as the FNO paper's Darcy setup does)."""

    architectures: ClassVar[Mapping[str, Mapping[str, Any]]] = {"model": {}}
    losses = tuple(LOSSES)
    metrics = (
        MetricSpec(
            "rel_l2", "lower", rel_tol=0.25, floor="rel_l2_floor", label="rel L2", ideal=0.0
        ),
        MetricSpec("mse", "lower", label="MSE"),
    )
    diagnostics = ("rel_l2_floor", "pred_std", "target_std")
    primary_metric = "rel_l2"
    collapse_std = ("pred_std", "target_std")
    normalize: ClassVar[bool] = False
    eval_batch_size: ClassVar[int] = 128

    @abstractmethod
    def arrays(self, spec: Any) -> Mapping[str, np.ndarray]:
        """``x_train, y_train, x_test, y_test``: numpy arrays with samples on dim 0."""

    # --- data ---------------------------------------------------------------------------------

    def data_hash(self, spec: Any) -> str:
        payload = {
            "workload": self.name,
            "spec": spec_dict(spec),
            "code": fingerprint(type(self)),
            "format": FORMAT_VERSION,
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def build_data(self, spec: Any, cache_dir: Path) -> SupervisedData:
        key = self.data_hash(spec)

        def load(path: Path) -> SupervisedData:
            return self._data(cache.read_npz(path), key, "the cached file " + str(path))

        def build() -> dict[str, np.ndarray]:
            data = self._data(self.arrays(spec), key, "arrays")  # validated before it is stored
            return {k: np.ascontiguousarray(getattr(data, k)) for k in ARRAY_KEYS}

        return cache.load_or_build(key, build, cache_dir, load=load)  # type: ignore[return-value]

    def _data(self, arrays: Mapping[str, Any], key: str, where: str) -> SupervisedData:
        def fail(problem: str) -> WorkloadError:
            return WorkloadError(self.name, where, problem)

        if not isinstance(arrays, Mapping) or set(ARRAY_KEYS) - set(arrays):
            got = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
            raise fail(f"expected a mapping with keys {list(ARRAY_KEYS)}, got {got}")
        out = {}
        for k in ARRAY_KEYS:
            a = np.asarray(arrays[k])
            if a.ndim < 2 or len(a) == 0 or not np.issubdtype(a.dtype, np.number):
                raise fail(
                    f"{k}: expected a numeric array (n >= 1, C, ...), got {a.shape} {a.dtype}"
                )
            if np.iscomplexobj(a) or not np.isfinite(a).all():
                raise fail(f"{k}: expected finite real values")
            if (beyond := _beyond_float32(a)) is not None:
                raise fail(f"{k}: {beyond}")
            out[k] = a.astype(np.float32, copy=False)
        for split in ("train", "test"):
            x, y = out[f"x_{split}"], out[f"y_{split}"]
            if len(x) != len(y):
                raise fail(f"x_{split} has {len(x)} samples, y_{split} {len(y)}; expected equal")
        for k in ("x", "y"):
            if out[f"{k}_train"].shape[1:] != out[f"{k}_test"].shape[1:]:
                raise fail(
                    f"{k}_train {out[f'{k}_train'].shape} and {k}_test {out[f'{k}_test'].shape}: "
                    "expected one sample shape"
                )
        return SupervisedData(**out, data_hash=key)

    def tensors(self, data: SupervisedData, device: torch.device) -> Tensors:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a).to(device)

        x_train, x_test = data.x_train, data.x_test
        if self.normalize:
            mean, std = data.stats("x_train")
            x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        return Tensors(train=(t(x_train), t(data.y_train)), test=(t(x_test), t(data.y_test)))

    # --- loss and evaluation ------------------------------------------------------------------

    def decoder(self, data: SupervisedData, device: torch.device) -> Any:
        """``fn(model output) -> prediction in target units`` (identity unless ``normalize``)."""
        if not self.normalize:
            return lambda out: out
        mean, std = (torch.as_tensor(a).to(device) for a in data.stats("y_train"))
        return lambda out: out * std + mean

    def _predict(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, decode: Any) -> Any:
        out = model(x)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise WorkloadError(
                self.name,
                "build_model",
                f"the model maps inputs {tuple(x.shape)} to {got}; expected the targets' shape "
                f"{tuple(y.shape)}",
            )
        return decode(out)

    def loss_fn(self, loss: str, data: SupervisedData, device: torch.device) -> LossFn:
        measure, decode = LOSSES[loss], self.decoder(data, device)

        def fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            x, y = batch
            return measure(self._predict(model, x, y, decode), y)

        return fn

    def evaluate(self, model: nn.Module, data: SupervisedData, tensors: Tensors) -> Evaluation:
        x_test, y_test = tensors.test
        decode = self.decoder(data, x_test.device)
        chunks = [
            self._predict(model, x_test[i : i + self.eval_batch_size], y, decode)
            for i in range(0, len(x_test), self.eval_batch_size)
            for y in [y_test[i : i + self.eval_batch_size]]
        ]
        pred = torch.cat(chunks).float()
        mean_target = torch.as_tensor(data.y_train.mean(axis=0)).to(pred.device)
        floor = relative_l2(mean_target.expand_as(y_test), y_test)
        metrics = {
            "rel_l2": float(relative_l2(pred, y_test)),
            "mse": float(mse(pred, y_test)),
            "rel_l2_floor": float(floor),
            # spread over samples, averaged over positions: ~0 when the output ignores the input
            "pred_std": float(pred.std(dim=0).mean()) if len(pred) > 1 else None,
            "target_std": float(y_test.std(dim=0).mean()) if len(y_test) > 1 else None,
        }
        images = {}
        if y_test.ndim == 4:  # (n, C, H, W): draw channel 0 of the first test sample
            images["test sample 0"] = (pred[0, 0].cpu().numpy(), y_test[0, 0].cpu().numpy())
        return Evaluation(metrics, images)
