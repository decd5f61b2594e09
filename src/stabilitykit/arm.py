"""The arm: an immutable, validated description of one training run, and the scales.

An arm says on what to train (a workload and its data spec), what to train (architecture and
its hyper-parameters) and how (optimiser, lr, epochs, batch size, loss, clipping, scheduler,
seed, device). Its ``hash`` covers every field that changes the numbers and the workload's code
fingerprint; its ``id`` is readable and filesystem-safe.

Example::

    CONTROL = Arm(name="control", workload="gridlines", architecture="hybrid", fno_blocks=4)
    DEEP = CONTROL.replace(name="deep_control", fno_blocks=8)
    arm = apply_scale(DEEP, "ci")
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from stabilitykit.workload import Scale, Workload, fingerprint, get_workload, spec_dict

OPTIMIZERS = ("adam", "adamw", "sgd")
CLIP_ALGORITHMS = ("none", "norm", "value", "agc", "agc_unit")
SCHEDULERS = ("constant", "warmup_cosine", "plateau", "step")
SCALES = ("smoke", "proxy", "ci", "full")
#: The scale that runs every arm as written (recorded as the arm's own ``scale``, "custom").
AS_WRITTEN = "none"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Fields that do not change the numbers: left out of the hash (``layer_norm_every`` only decides
# how often per-layer telemetry is written).
_UNHASHED = frozenset({"name", "scale", "layer_norm_every", "sweep"})
#: Model fields an architecture may accept (``None``: the architecture's default).
MODEL_FIELDS = ("width", "modes", "fno_blocks", "min_resolution", "max_channels", "layerscale_init")
#: The numeric fields a sweep may vary (:mod:`stabilitykit.sweep`).
SWEEPABLE = (
    "lr",
    "weight_decay",
    "clip_value",
    "epochs",
    "batch_size",
    "warmup_epochs",
    "lr_step_epochs",
    "lr_gamma",
    *MODEL_FIELDS,
)


def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"Arm.{field_name}: got {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class Arm:
    """One training run. All fields are validated on construction (``ValueError`` names the field).

    ``workload`` is a registered workload's name (a :class:`~stabilitykit.workload.Workload`
    class or instance is registered and replaced by its name); ``data`` its spec (``None``: the
    workload's default spec); ``architecture`` and ``loss`` one of the workload's (``None``: its
    first). Model fields ``width``, ``modes``, ``fno_blocks``, ``min_resolution``,
    ``max_channels`` and ``layerscale_init`` are passed to the architecture that accepts them;
    ``None`` means the architecture's default. The ``step`` scheduler multiplies the lr by
    ``lr_gamma`` every ``lr_step_epochs`` epochs. Every ``grad_norm_every`` steps the global
    gradient norms are logged; every ``layer_norm_every`` steps (0: never) each layer's gradient
    norm and update-to-weight ratio (``layers.jsonl``; not in the hash: it changes no number).
    ``sweep``: ``(family, field)`` when the arm is a point of a sweep (:mod:`stabilitykit.sweep`)
    over ``field`` (one of :data:`SWEEPABLE`); a scale keeps that field as written. Not in the
    hash: it names the point's family, as ``name`` names the arm.
    """

    name: str = "arm"
    workload: str = "gridlines"
    architecture: str | None = None
    width: int | None = None
    modes: int | None = None
    fno_blocks: int | None = None
    min_resolution: int | None = None
    max_channels: int | None = None
    layerscale_init: float | None = None
    data: Any = None
    optimizer: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 16
    loss: str | None = None
    clip: str = "norm"
    clip_value: float | None = 1.0
    grad_norm_every: int = 1
    layer_norm_every: int = 50
    scheduler: str = "constant"
    warmup_epochs: int = 0
    lr_step_epochs: int = 100
    lr_gamma: float = 0.5
    seed: int = 20260128
    device: str = "cpu"
    scale: str = "custom"
    sweep: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            _fail("name", self.name, "1-64 characters from [A-Za-z0-9_.-], starting alphanumeric")
        try:
            workload = get_workload(self.workload)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Arm.workload: {exc}") from None
        object.__setattr__(self, "workload", workload.name)
        if self.data is None:
            object.__setattr__(self, "data", workload.default_spec())
        if self.architecture is None:
            object.__setattr__(self, "architecture", next(iter(workload.architectures)))
        if self.loss is None:
            object.__setattr__(self, "loss", workload.losses[0])
        if self.architecture not in workload.architectures:
            _fail(
                "architecture",
                self.architecture,
                f"one of {tuple(workload.architectures)} (workload {workload.name!r})",
            )
        for name in MODEL_FIELDS[:-1]:
            value = getattr(self, name)
            if value is not None and not _is_int(value, 1):
                _fail(name, value, "a positive int or None (architecture default)")
        if self.layerscale_init is not None and not (
            _is_number(self.layerscale_init) and self.layerscale_init >= 0
        ):
            _fail("layerscale_init", self.layerscale_init, "a finite number >= 0 or None")
        if not isinstance(self.data, workload.spec_type):
            _fail(
                "data", self.data, f"a {workload.spec_type.__name__} (workload {workload.name!r})"
            )
        _check_choice("loss", self.loss, workload.losses)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("clip", self.clip, CLIP_ALGORITHMS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("scale", self.scale, (*SCALES, "custom"))
        if not (_is_number(self.lr) and self.lr > 0):
            _fail("lr", self.lr, "a finite number > 0")
        if not (
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            _fail("betas", self.betas, "a pair of numbers in [0, 1)")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            _fail("weight_decay", self.weight_decay, "a finite number >= 0")
        for name in ("epochs", "batch_size", "grad_norm_every", "lr_step_epochs"):
            value = getattr(self, name)
            if not _is_int(value, 1):
                _fail(name, value, "a positive int")
        if not _is_int(self.layer_norm_every, 0):
            _fail("layer_norm_every", self.layer_norm_every, "an int >= 0 (0: no periodic rows)")
        if not (_is_number(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            _fail("lr_gamma", self.lr_gamma, "a number in (0, 1]")
        if self.clip == "none":
            if self.clip_value is not None:
                _fail("clip_value", self.clip_value, "None when clip is 'none'")
        elif not (_is_number(self.clip_value) and self.clip_value > 0):
            _fail("clip_value", self.clip_value, f"a finite number > 0 when clip is {self.clip!r}")
        if not _is_int(self.warmup_epochs, 0) or self.warmup_epochs >= self.epochs:
            _fail("warmup_epochs", self.warmup_epochs, f"an int in [0, epochs={self.epochs})")
        if not _is_int(self.seed, 0) or self.seed >= 2**63:
            _fail("seed", self.seed, "an int in [0, 2**63)")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            _fail("device", self.device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.sweep is not None and not (
            isinstance(self.sweep, tuple)
            and len(self.sweep) == 2
            and isinstance(self.sweep[0], str)
            and NAME_PATTERN.match(self.sweep[0])
            and self.sweep[1] in SWEEPABLE
        ):
            _fail("sweep", self.sweep, f"None or (family name, one of {SWEEPABLE})")
        self._check_model()

    @property
    def workload_impl(self) -> Workload:
        """The registered workload this arm names."""
        return get_workload(self.workload)

    def _check_model(self) -> None:
        workload = self.workload_impl
        accepted = workload.architectures[self.architecture]
        for key, value in self._set_model_fields().items():
            if key not in accepted:
                _fail(
                    key,
                    value,
                    f"None for architecture {self.architecture!r} (it accepts {sorted(accepted)})",
                )
        workload.validate_model(self.data, self.architecture, self.model_kwargs())

    def _set_model_fields(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in MODEL_FIELDS if getattr(self, n) is not None}

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the workload's ``build_model``: architecture defaults overridden
        by set fields."""
        kwargs = dict(self.workload_impl.architectures[self.architecture])
        kwargs.update(self._set_model_fields())
        return kwargs

    def replace(self, **changes: Any) -> Arm:
        """A validated copy with ``changes``; data-spec fields may be given as ``data=spec``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"Arm.replace: unknown field(s) {sorted(unknown)}; allowed: "
                f"{sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (the data spec nested), and ``workload_code``: the
        workload's code fingerprint (derived, not a field)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["data"] = spec_dict(self.data)
        out["betas"] = list(self.betas)
        out["sweep"] = list(self.sweep) if self.sweep is not None else None
        out["workload_code"] = fingerprint(type(self.workload_impl))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arm:
        """The arm of ``to_dict``; records made before workloads existed are grid-lines arms.
        ``workload_code`` is ignored: the hash is that of the code present now."""
        if not isinstance(d, dict):
            raise TypeError(f"Arm.from_dict: expected a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k != "workload_code"}
        unknown = set(kwargs) - names
        if unknown:
            raise ValueError(f"Arm.from_dict: unknown field(s) {sorted(unknown)}")
        kwargs.setdefault("workload", "gridlines")
        try:
            workload = get_workload(kwargs["workload"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Arm.from_dict: workload: {exc}") from None
        if "data" in kwargs:
            kwargs["data"] = workload.spec_from_dict(kwargs["data"])
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        if kwargs.get("sweep") is not None:
            kwargs["sweep"] = tuple(kwargs["sweep"])
        return cls(**kwargs)

    @property
    def hash(self) -> str:
        """16 hex digits of sha256 over every field that changes the numbers (:func:`hash_of`)."""
        return hash_of(self.to_dict())

    @property
    def family_hash(self) -> str:
        """The hash without the seed: the same for every seed replicate of one arm."""
        return hash_of(self.to_dict(), family=True)

    @property
    def id(self) -> str:
        """Readable, filesystem-safe id: ``<name>-<architecture>-b<blocks>-seed<seed>``."""
        blocks = self.model_kwargs().get("fno_blocks")
        depth = f"-b{blocks}" if blocks is not None else ""
        return f"{self.name}-{self.architecture}{depth}-seed{self.seed}"


def hash_of(arm: dict[str, Any], *, family: bool = False) -> str:
    """The hash of an arm dict (``Arm.to_dict()``, or a record's ``arm``): every field that
    changes the numbers (``family``: the seed left out too). The device counts by its type only:
    ``cuda:0`` and ``cuda:1`` are the same arm (xdist workers spread a stage over the GPUs)."""
    unhashed = _UNHASHED | {"seed"} if family else _UNHASHED
    payload = {k: v for k, v in arm.items() if k not in unhashed}
    if isinstance(payload.get("device"), str):
        payload["device"] = payload["device"].partition(":")[0]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _is_int(x: Any, minimum: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, value, f"one of {allowed}")


# --- scales -------------------------------------------------------------------------------------


def scale_arm(arm: Arm, scale: Scale) -> Arm:
    """``arm`` at ``scale``: the scale's data-spec fields and epochs, and its model fields where
    the architecture accepts them (modes capped, a channel cap kept at the same multiple of the
    width), and the scale's declared ``recipe`` changes (e.g. the lr at ``ci``). A schedule keeps
    its period in epochs. A scale never changes the architecture, loss, clipping or seed, nor a
    sweep point's swept field (``arm.sweep``): the sweep's values are the ones run."""
    changes: dict[str, Any] = {"scale": scale.name}
    if scale.data:
        replace = getattr(arm.data, "replace", None)
        if not callable(replace):
            replace = functools.partial(dataclasses.replace, arm.data)
        changes["data"] = replace(**scale.data)
    if scale.epochs is not None:
        changes["epochs"] = scale.epochs
        changes["warmup_epochs"] = min(arm.warmup_epochs, scale.epochs - 1)
    changes.update(scale.recipe)
    accepted = arm.workload_impl.architectures[arm.architecture]
    kwargs = arm.model_kwargs()
    for key, value in scale.model.items():
        if key in accepted:
            changes[key] = value
    if scale.modes_cap is not None and "modes" in accepted:
        changes["modes"] = min(kwargs["modes"], scale.modes_cap)
    width = scale.model.get("width")
    if "max_channels" in accepted and arm.max_channels is not None and width is not None:
        changes["max_channels"] = max(1, arm.max_channels * width // kwargs["width"])
    if arm.sweep is not None:
        changes.pop(arm.sweep[1], None)
    return arm.replace(**changes)


def apply_scale(arm: Arm, scale: str) -> Arm:
    """Return ``arm`` at ``scale`` (one of ``SCALES``), as its workload sizes that scale; the
    scale name is recorded on the arm. ``"none"`` returns the arm as written."""
    if scale == AS_WRITTEN:
        return arm
    if scale not in SCALES:
        raise ValueError(f"scale: got {scale!r}; allowed: one of {(*SCALES, AS_WRITTEN)}")
    return scale_arm(arm, arm.workload_impl.scale(scale))


def scale_changes(written: Arm, scaled: Arm) -> dict[str, list[Any]]:
    """``{field: [as written, as run]}`` for each field the scale changed (``data.N`` for a
    spec field); the scale's own name is left out."""
    out: dict[str, list[Any]] = {}
    before, after = written.to_dict(), scaled.to_dict()
    for key in before:
        if key in ("scale", "workload_code"):
            continue
        if key == "data":
            for sub in before[key]:
                if before[key][sub] != after[key].get(sub):
                    out[f"data.{sub}"] = [before[key][sub], after[key].get(sub)]
        elif before[key] != after[key]:
            out[key] = [before[key], after[key]]
    return out
