"""The arm: an immutable, validated description of one training run, and the scales.

An arm says what to train (architecture and its hyper-parameters), on what (a grid-lines data
spec), and how (optimiser, lr, epochs, batch size, loss, clipping, scheduler, seed, device). Its
``hash`` covers every field that changes the numbers; its ``id`` is readable and filesystem-safe.

Example::

    CONTROL = Arm(name="control", architecture="hybrid", fno_blocks=4, clip="norm", clip_value=1.0)
    DEEP = CONTROL.replace(name="deep_control", fno_blocks=8)
    arm = apply_scale(DEEP, "ci")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from stabilitykit.data.spec import GridLinesSpec

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("mae", "poisson")
CLIP_ALGORITHMS = ("none", "norm", "value", "agc", "agc_unit")
SCHEDULERS = ("constant", "warmup_cosine", "plateau")
SCALES = ("smoke", "ci", "full")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Fields that do not change the numbers: left out of the hash.
_UNHASHED = frozenset({"name", "scale"})


def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"Arm.{field_name}: got {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class Arm:
    """One training run. All fields are validated on construction (``ValueError`` names the field).

    Model fields ``width``, ``modes``, ``fno_blocks``, ``min_resolution``, ``max_channels`` and
    ``layerscale_init`` are passed to the architecture that accepts them; ``None`` means the
    architecture's default.
    """

    name: str = "arm"
    architecture: str = "hybrid"
    width: int | None = None
    modes: int | None = None
    fno_blocks: int | None = None
    min_resolution: int | None = None
    max_channels: int | None = None
    layerscale_init: float | None = None
    data: GridLinesSpec = field(default_factory=GridLinesSpec)
    optimizer: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 16
    loss: str = "mae"
    clip: str = "norm"
    clip_value: float | None = 1.0
    grad_norm_every: int = 1
    scheduler: str = "constant"
    warmup_epochs: int = 0
    seed: int = 20260128
    device: str = "cpu"
    scale: str = "custom"

    def __post_init__(self) -> None:
        from stabilitykit.models.registry import ARCHITECTURES

        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            _fail("name", self.name, "1-64 characters from [A-Za-z0-9_.-], starting alphanumeric")
        if self.architecture not in ARCHITECTURES:
            _fail("architecture", self.architecture, f"one of {ARCHITECTURES}")
        for name in ("width", "modes", "fno_blocks", "min_resolution", "max_channels"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                _fail(name, value, "a positive int or None (architecture default)")
        if self.layerscale_init is not None and not (
            _is_number(self.layerscale_init) and self.layerscale_init >= 0
        ):
            _fail("layerscale_init", self.layerscale_init, "a finite number >= 0 or None")
        if not isinstance(self.data, GridLinesSpec):
            _fail("data", self.data, "a GridLinesSpec")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("loss", self.loss, LOSSES)
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
        for name in ("epochs", "batch_size", "grad_norm_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, value, "a positive int")
        if self.clip == "none":
            if self.clip_value is not None:
                _fail("clip_value", self.clip_value, "None when clip is 'none'")
        elif not (_is_number(self.clip_value) and self.clip_value > 0):
            _fail("clip_value", self.clip_value, f"a finite number > 0 when clip is {self.clip!r}")
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            _fail("warmup_epochs", self.warmup_epochs, f"an int in [0, epochs={self.epochs})")
        if (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not 0 <= self.seed < 2**63
        ):
            _fail("seed", self.seed, "an int in [0, 2**63)")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            _fail("device", self.device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
        self._check_model()

    def _check_model(self) -> None:
        from stabilitykit.models.registry import architecture_defaults, validate_architecture

        accepted = architecture_defaults(self.architecture)
        for key, value in self._set_model_fields().items():
            if key not in accepted:
                _fail(
                    key,
                    value,
                    f"None for architecture {self.architecture!r} (it accepts {sorted(accepted)})",
                )
        validate_architecture(self.architecture, self.data.N, **self.model_kwargs())

    def _set_model_fields(self) -> dict[str, Any]:
        names = (
            "width",
            "modes",
            "fno_blocks",
            "min_resolution",
            "max_channels",
            "layerscale_init",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model``: architecture defaults overridden by set fields."""
        from stabilitykit.models.registry import architecture_defaults

        kwargs = dict(architecture_defaults(self.architecture))
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
        """JSON-safe dict of every field (the data spec nested)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["data"] = self.data.to_dict()
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arm:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Arm.from_dict: unknown field(s) {sorted(unknown)}")
        kwargs = dict(d)
        if "data" in kwargs:
            kwargs["data"] = GridLinesSpec.from_dict(kwargs["data"])
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)

    @property
    def hash(self) -> str:
        """16 hex digits of sha256 over every field that changes the numbers."""
        return _digest({k: v for k, v in self.to_dict().items() if k not in _UNHASHED})

    @property
    def family_hash(self) -> str:
        """The hash without the seed: the same for every seed replicate of one arm."""
        unhashed = _UNHASHED | {"seed"}
        return _digest({k: v for k, v in self.to_dict().items() if k not in unhashed})

    @property
    def id(self) -> str:
        """Readable, filesystem-safe id: ``<name>-<architecture>-b<blocks>-seed<seed>``."""
        blocks = self.model_kwargs().get("fno_blocks")
        depth = f"-b{blocks}" if blocks is not None else ""
        return f"{self.name}-{self.architecture}{depth}-seed{self.seed}"


def _digest(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, value, f"one of {allowed}")


# --- scales -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Sizes and epochs for one scale; ``None`` keeps the arm's own value.

    A scale changes sizes and epochs, never the meaning of an arm: the architecture, loss,
    clipping, optimiser, lr and seed stay as written.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    modes_cap: int | None = None
    min_resolution: int | None = None
    epochs: int | None = None

    def apply(self, arm: Arm) -> Arm:
        changes: dict[str, Any] = {"scale": self.name}
        if self.data:
            changes["data"] = arm.data.replace(**self.data)
        if self.epochs is not None:
            changes["epochs"] = self.epochs
            changes["warmup_epochs"] = min(arm.warmup_epochs, self.epochs - 1)
        accepted = _accepted(arm.architecture)
        if self.width is not None and "width" in accepted:
            changes["width"] = self.width
        if self.modes_cap is not None and "modes" in accepted:
            changes["modes"] = min(arm.model_kwargs()["modes"], self.modes_cap)
        if self.min_resolution is not None and "min_resolution" in accepted:
            changes["min_resolution"] = self.min_resolution
        if "max_channels" in accepted and arm.max_channels is not None and self.width is not None:
            # keep the channel cap at the same multiple of the width
            base_width = arm.model_kwargs()["width"]
            changes["max_channels"] = max(1, arm.max_channels * self.width // base_width)
        return arm.replace(**changes)


SCALE_TABLE: dict[str, Scale] = {
    # The seed's configuration, exactly (DOMAIN.md §6).
    "full": Scale(name="full"),
    # Minutes on 2 CPU cores: N 32, object 128 (625 train / 100 test patches), width 16,
    # 25 epochs (~1,000 steps); min_resolution 4 keeps the hybrid's four levels of the full net.
    "ci": Scale(
        name="ci",
        data={"N": 32, "object_size": 128, "nimgs_train": 1, "nimgs_test": 1},
        width=16,
        modes_cap=12,
        min_resolution=4,
        epochs=25,
    ),
    # Seconds: for tests of the harness itself.
    "smoke": Scale(
        name="smoke",
        data={"N": 16, "object_size": 48, "nimgs_train": 1, "nimgs_test": 1, "test_stride": 8},
        width=4,
        modes_cap=4,
        min_resolution=2,
        epochs=2,
    ),
}


def _accepted(architecture: str) -> dict[str, Any]:
    from stabilitykit.models.registry import architecture_defaults

    return architecture_defaults(architecture)


def apply_scale(arm: Arm, scale: str) -> Arm:
    """Return ``arm`` at ``scale`` (one of ``SCALES``); the scale name is recorded on the arm."""
    if scale not in SCALE_TABLE:
        raise ValueError(f"scale: got {scale!r}; allowed: one of {SCALES}")
    return SCALE_TABLE[scale].apply(arm)
