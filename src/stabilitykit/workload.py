"""The workload interface: everything problem-specific, behind one small ABC.

A workload owns its data set (built from a frozen spec, content-addressed and cached), its models
(built from an arm's model settings), the loss of a batch, the evaluation into named metrics with
their directions, default gate tolerances and trivial-predictor floors, and the images for the
report. The engine (arm, loop, criteria, records, reports, gate, plugin) sees only this interface
and imports no particular workload (docs/workloads.md).

Workloads are found by name: the built-in ones and third-party packages register an entry point
in the ``stabilitykit.workloads`` group; a user's own class registers itself with
:func:`register_workload` (or is passed to ``Arm(workload=...)`` directly).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from stabilitykit.fingerprint import definitions, digest, module_files

ENTRY_POINT_GROUP = "stabilitykit.workloads"
DIRECTIONS = ("higher", "lower")

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class WorkloadError(ValueError):
    """A workload broke its contract; the message names the workload, the method and what was
    expected."""

    def __init__(self, workload: str, method: str, problem: str) -> None:
        super().__init__(f"workload {workload!r}, {method}: {problem}")
        self.workload, self.method, self.problem = workload, method, problem


@dataclass(frozen=True)
class MetricSpec:
    """One judged metric: which way is better, its default gate tolerance (the allowed change
    from a baseline value ``ref`` is ``abs_tol + rel_tol * |ref|``), and the name of the metric
    that holds the trivial predictor's value, if any (``floor``), and the best value the metric
    can take, if any (``ideal``: 1 for SSIM, 0 for an error), which lets the collapse criterion
    measure how much of the possible gain above the floor a run learned."""

    name: str
    direction: Literal["higher", "lower"]
    abs_tol: float | None = None
    rel_tol: float | None = None
    floor: str | None = None
    label: str = ""
    ideal: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"MetricSpec.name: got {self.name!r}; allowed: an identifier")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"MetricSpec({self.name!r}).direction: got {self.direction!r}; "
                f"allowed: one of {DIRECTIONS}"
            )
        for key in ("abs_tol", "rel_tol"):
            value = getattr(self, key)
            if value is not None and not (_is_number(value) and value >= 0):
                raise ValueError(
                    f"MetricSpec({self.name!r}).{key}: got {value!r}; "
                    "allowed: a number >= 0 or None"
                )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["label"] = self.label or self.name
        return out


@dataclass(frozen=True)
class Tensors:
    """A data set as the loop sees it: ``train`` and ``test`` are tuples of tensors on the
    device, indexed by sample along dim 0 (e.g. ``(inputs, targets)``, or ``(inputs,)`` for a
    self-supervised problem). A batch is the same tuple indexed by sample indices."""

    train: Batch
    test: Batch

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            parts = getattr(self, split)
            if not isinstance(parts, tuple) or not parts:
                raise ValueError(f"Tensors.{split}: expected a non-empty tuple of tensors")
            sizes = {len(t) for t in parts}
            if len(sizes) != 1 or 0 in sizes:
                raise ValueError(
                    f"Tensors.{split}: every tensor needs the same number (> 0) of samples along "
                    f"dim 0, got {[tuple(t.shape) for t in parts]}"
                )


@dataclass(frozen=True)
class Evaluation:
    """What :meth:`Workload.evaluate` returns: named metrics (a declared metric or diagnostic
    each; ``None`` where not defined, e.g. a phase metric of a data set without phase) and
    optional images ``{name: (prediction, truth)}`` for the report, the first one drawn."""

    metrics: dict[str, float | int | bool | None]
    images: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class NoSpec:
    """The spec of a workload whose data set has no settings."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoSpec:
        if d:
            raise ValueError(f"NoSpec.from_dict: this workload's spec has no fields, got {dict(d)}")
        return cls()


@dataclass(frozen=True)
class Scale:
    """Sizes for one scale: data-spec fields, model fields and epochs to set; a ``modes_cap``
    caps the modes. A scale changes sizes and epochs, not the meaning of an arm; where a smaller
    problem needs another recipe to learn at all (e.g. a larger lr at a few hundred steps), the
    scale says so in ``recipe`` (arm fields such as ``lr``), and every run records what its scale
    changed (``config.json`` ``scale_changes``)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    modes_cap: int | None = None
    epochs: int | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mitigation:
    """A lever the workload offers against instability, for the report's recommended next
    experiment: a short ``text`` and the arm fields it sets (``changes``), e.g.
    ``Mitigation("LayerScale on the residual branches", {"architecture": "stable_hybrid",
    "layerscale_init": 1e-3})``. A report offers it to an arm whose architecture (or the one it
    switches to) accepts every model field it sets and that does not have it yet."""

    text: str
    changes: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"Mitigation.text: got {self.text!r}; allowed: a short text")
        if not isinstance(self.changes, Mapping) or not self.changes:
            raise ValueError(
                f"Mitigation({self.text!r}).changes: got {self.changes!r}; allowed: a non-empty "
                "mapping of arm fields to values"
            )
        for key in self.changes:
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(
                    f"Mitigation({self.text!r}).changes: key {key!r}; allowed: an arm field name"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "changes": dict(self.changes)}


class Workload(ABC):
    """A problem to train on. Subclass it, fill the class attributes, implement the abstract
    methods; :class:`stabilitykit.workloads.supervised.SupervisedWorkload` fills most of it for
    a regression from arrays.

    Class attributes:
        name: the registry name (``Arm.workload``).
        spec_type: a frozen dataclass of the data set's settings (``to_dict``/``from_dict``).
        architectures: allowed ``Arm.architecture`` values -> their default model fields; the
            first is the default.
        losses: allowed ``Arm.loss`` values; the first is the default.
        metrics: the judged metrics (direction, tolerance, floor).
        diagnostics: other names :meth:`evaluate` may return (floors, stds), shown, not gated.
        primary_metric: the metric criteria and summaries lead with.
        collapse_std: ``(prediction std, truth std)`` metric names, when the workload reports
            them: a prediction whose std is a small fraction of the truth's is constant.
        scales: ``smoke``/``proxy``/``ci``/``full`` -> :class:`Scale` (a missing scale changes
            nothing, except ``proxy``: by default the ``ci`` scale at half its epochs).
        code: names of further modules or packages whose source changes the numbers, hashed
            whole into the code fingerprint: code reached only at run time (a registry by name),
            a shared model library (:func:`fingerprint_sources` follows the names it sees).
        mitigations: the workload's own levers against instability (:class:`Mitigation`, or
            ``(text, changes)`` pairs), which the report recommends beside the engine's (AGC, a
            lower lr); advice only, so they are left out of the code fingerprint.
    """

    name: ClassVar[str]
    spec_type: ClassVar[type] = NoSpec
    architectures: ClassVar[Mapping[str, Mapping[str, Any]]]
    losses: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    diagnostics: ClassVar[tuple[str, ...]] = ()
    primary_metric: ClassVar[str]
    collapse_std: ClassVar[tuple[str, str] | None] = None
    scales: ClassVar[Mapping[str, Scale]] = {}
    code: ClassVar[tuple[str, ...]] = ()
    mitigations: ClassVar[tuple[Mitigation | tuple[str, Mapping[str, Any]], ...]] = ()

    # --- data ---------------------------------------------------------------------------------

    def default_spec(self) -> Any:
        return self.spec_type()

    def spec_from_dict(self, d: Mapping[str, Any]) -> Any:
        from_dict = getattr(self.spec_type, "from_dict", None)
        return from_dict(d) if callable(from_dict) else self.spec_type(**d)

    @abstractmethod
    def data_hash(self, spec: Any) -> str:
        """The content address of the data set of ``spec`` (16 hex)."""

    @abstractmethod
    def build_data(self, spec: Any, cache_dir: Path) -> Any:
        """The data set of ``spec``, through the cache in ``cache_dir``."""

    @abstractmethod
    def tensors(self, data: Any, device: torch.device) -> Tensors:
        """The train and test tensors of ``data`` on ``device``."""

    def seeds(self, spec: Any) -> dict[str, int]:
        """Seeds of the data set, for the record."""
        seed = getattr(spec, "seed", None)
        return {"data": seed} if isinstance(seed, int) else {}

    # --- model --------------------------------------------------------------------------------

    def validate_model(  # noqa: B027 (optional hook: the default checks nothing more)
        self, spec: Any, architecture: str, kwargs: Mapping[str, Any]
    ) -> None:
        """Raise ``ValueError`` naming the field when a model cannot be built (before training).
        The default accepts anything the architecture's defaults list."""

    @abstractmethod
    def build_model(self, data: Any, architecture: str, **kwargs: Any) -> nn.Module:
        """A fresh model for the data set ``data`` (as :meth:`build_data` returned it);
        ``kwargs`` are the architecture's defaults overridden by the arm."""

    # --- loss and evaluation ------------------------------------------------------------------

    @abstractmethod
    def loss_fn(self, loss: str, data: Any, device: torch.device) -> LossFn:
        """The training loss ``loss`` (one of :attr:`losses`) as ``fn(model, batch) -> 0-d``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Any, tensors: Tensors) -> Evaluation:
        """Named metrics of the trained ``model`` on the test split (model in eval mode)."""

    # --- what the engine derives --------------------------------------------------------------

    def scale(self, name: str) -> Scale:
        """The workload's :class:`Scale` called ``name``. Without a ``proxy`` entry, ``proxy``
        is the ``ci`` scale at half its epochs (at least 1; the same as ``ci`` when ``ci`` sets
        no epochs): the cheaper tier of sweeps (docs/frontiers.md)."""
        if name in self.scales:
            return self.scales[name]
        if name == "proxy":
            ci = self.scale("ci")
            epochs = max(1, ci.epochs // 2) if ci.epochs is not None else None
            return dataclasses.replace(ci, name="proxy", epochs=epochs)
        return Scale(name)

    def describe(self) -> dict[str, Any]:
        """The workload's block of ``config.json``: name, code fingerprint, metric declarations."""
        return {
            "name": self.name,
            "fingerprint": fingerprint(type(self)),
            "primary_metric": self.primary_metric,
            "metrics": [m.to_dict() for m in self.metrics],
            "diagnostics": list(self.diagnostics),
            "collapse_std": list(self.collapse_std) if self.collapse_std else None,
            "architectures": {a: dict(d) for a, d in self.architectures.items()},
            "mitigations": [m.to_dict() for m in declared_mitigations(type(self))],
        }

    def check_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Raise :class:`WorkloadError` for a metric with no declaration or a value that is not a
        finite number (``None`` and bools pass: not defined, or a flag)."""
        declared = {m.name for m in self.metrics} | set(self.diagnostics)
        for key, value in metrics.items():
            if key not in declared:
                raise WorkloadError(
                    self.name,
                    "evaluate",
                    f"metric {key!r} has no declared direction; declare it in `metrics` "
                    f"(MetricSpec) or `diagnostics` (declared: {sorted(declared)})",
                )
            if value is None or isinstance(value, bool):
                continue
            if not _is_number(value):
                raise WorkloadError(
                    self.name, "evaluate", f"metric {key!r} is {value!r}; expected a finite number"
                )


def declared_mitigations(cls: type[Workload]) -> tuple[Mitigation, ...]:
    """``cls.mitigations`` as :class:`Mitigation` values (a ``(text, changes)`` pair becomes
    one); ``TypeError`` naming the workload for an entry that is neither, or one whose
    ``architecture`` is not the workload's or whose model fields no architecture accepts."""
    where = getattr(cls, "name", cls.__name__)
    model_fields = {k for defaults in cls.architectures.values() for k in defaults}
    out = []
    for i, entry in enumerate(getattr(cls, "mitigations", ())):
        try:
            m = entry if isinstance(entry, Mitigation) else Mitigation(*entry)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"workload {where!r}: mitigations[{i}]: {exc}; expected a Mitigation or a "
                "(text, changes) pair"
            ) from None
        target = m.changes.get("architecture")
        if target is not None and target not in cls.architectures:
            raise TypeError(
                f"workload {where!r}: mitigations[{i}] ({m.text!r}) sets architecture "
                f"{target!r}; allowed: one of {tuple(cls.architectures)}"
            )
        accepted = cls.architectures[target] if target is not None else model_fields
        unknown = sorted(k for k in m.changes if k in model_fields and k not in accepted)
        if unknown:
            raise TypeError(
                f"workload {where!r}: mitigations[{i}] ({m.text!r}) sets {unknown}, which "
                f"architecture {target!r} does not accept"
            )
        out.append(m)
    return tuple(out)


def spec_dict(spec: Any) -> dict[str, Any]:
    """``spec.to_dict()``, or ``dataclasses.asdict`` of a plain frozen dataclass."""
    to_dict = getattr(spec, "to_dict", None)
    return to_dict() if callable(to_dict) else dataclasses.asdict(spec)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_declarations(cls: type[Workload]) -> None:
    """Raise ``TypeError`` naming the attribute when a workload class is incomplete."""
    where = getattr(cls, "__name__", str(cls))
    for attr in ("name", "architectures", "losses", "metrics", "primary_metric"):
        if not hasattr(cls, attr):
            raise TypeError(f"workload {where}: class attribute {attr!r} is missing")
    if not isinstance(cls.name, str) or not cls.name.replace("_", "").isalnum():
        raise TypeError(f"workload {where}: name {cls.name!r}; allowed: letters, digits, _")
    if not cls.architectures or not cls.losses:
        raise TypeError(f"workload {cls.name!r}: architectures and losses must not be empty")
    names = [m.name for m in cls.metrics]
    if cls.primary_metric not in names:
        raise TypeError(
            f"workload {cls.name!r}: primary_metric {cls.primary_metric!r} is not in metrics "
            f"{names}"
        )
    declared_mitigations(cls)
    declared = set(names) | set(cls.diagnostics)
    for m in cls.metrics:
        if m.floor is not None and m.floor not in declared:
            raise TypeError(
                f"workload {cls.name!r}: metric {m.name!r} has floor {m.floor!r}, which is not "
                "declared in metrics or diagnostics"
            )


# --- fingerprints -----------------------------------------------------------------------------


def fingerprint_sources(cls: type) -> dict[str, str]:
    """The code :func:`fingerprint` hashes, normalised (comments, docstrings and formatting do
    not count: :func:`stabilitykit.fingerprint.normalized`), keyed by names that do not depend on
    where the code lives:

    - a built-in workload (a package under ``stabilitykit/workloads/``): every file of its
      package (``gridlines/workload.py``);
    - any other class in ``cls``'s MRO below :class:`Workload` (a user's class in a test file,
      ``SupervisedWorkload``): the class and, transitively, the module-level functions, classes
      and constants it names (``Mine``, ``Net``, ``relative_l2``), in its module and in the
      modules it imports them from, unless those are the standard library, an installed
      package (``site-packages``: torch, numpy) or the engine, whose code has a fingerprint of
      its own (:func:`stabilitykit.run.code_fingerprint`);
    - every file of the modules or packages named in ``code`` (``models/spectral.py``): name
      there the code a workload finds by name at run time.
    """
    roots: list[type] = []
    pieces: dict[str, str] = {}
    for klass in cls.__mro__:
        module = klass.__module__
        if klass in (Workload, object) or _is_library_class(klass):
            continue
        if module.startswith(_BUILT_IN) and module.count(".") > 2:
            pieces.update(module_files(".".join(module.split(".")[:3])))
        else:
            roots.append(klass)
    own = {klass.__module__.partition(".")[0] for klass in roots} - {"stabilitykit"}
    pieces.update(definitions(roots, lambda module: _is_workload_code(module, own)))
    for module in getattr(cls, "code", ()):
        try:
            pieces.update(module_files(module))
        except (ValueError, ModuleNotFoundError):
            raise ValueError(f"workload {cls.__name__}: code module {module!r} not found") from None
    return pieces


#: Top-level modules whose classes are never a workload's own code (``__main__`` is: a script's).
_NOT_WORKLOAD_CODE = frozenset(sys.stdlib_module_names - {"__main__"}) | {"builtins"}
#: The built-in workloads' packages (each fingerprinted whole) and the models they share.
_BUILT_IN = "stabilitykit.workloads."
_SHARED_CODE = ("stabilitykit.models", "stabilitykit.workloads")


def _is_library_class(klass: type) -> bool:
    """A class of the standard library (``abc.ABC``). A class made with ``type()`` may carry the
    standard library's module name too (``abc``, for a subclass of an ABC), but is not in it."""
    if klass.__module__.partition(".")[0] not in _NOT_WORKLOAD_CODE:
        return False
    found: Any = sys.modules.get(klass.__module__)
    for part in klass.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is klass


def _is_workload_code(module: str, own: set[str]) -> bool:
    """Whether names imported from ``module`` are followed into it: the workload's own
    packages (``own``), stabilitykit's models and workloads, and any other module that is
    neither the standard library nor an installed package."""
    top = module.partition(".")[0]
    if top in _NOT_WORKLOAD_CODE:
        return False
    if top in own:
        return True
    if top == "stabilitykit":
        return module.startswith(_SHARED_CODE)
    path = getattr(sys.modules.get(module), "__file__", None)
    parts = Path(path).parts if path else ()
    return bool(path) and "site-packages" not in parts and "dist-packages" not in parts


@functools.cache
def fingerprint(cls: type) -> str:
    """sha256 (16 hex) over the workload's code (:func:`fingerprint_sources`). A change to the
    code that computes the numbers (a model's ``forward``, a loss) changes every arm hash of the
    workload, so the gate says "not comparable"; a comment, a docstring, a reformat, a test or
    an arm added next to the workload, or moving the code to another folder or machine, does
    not."""
    return digest(fingerprint_sources(cls))


# --- the registry -----------------------------------------------------------------------------

_REGISTRY: dict[str, Workload] = {}


def register_workload(workload: type[Workload] | Workload) -> Workload:
    """Register a workload class or instance under its ``name``; returns the instance. Usable as
    a class decorator. Registering another class under a taken name raises ``ValueError``."""
    cls = workload if isinstance(workload, type) else type(workload)
    if not issubclass(cls, Workload):
        raise TypeError(
            f"register_workload: expected a Workload subclass or instance, got {workload!r}"
        )
    check_declarations(cls)
    instance = workload() if isinstance(workload, type) else workload
    fingerprint(cls)  # the code as it was when registered (a later edit of the file differs)
    old = _REGISTRY.get(instance.name)
    if old is not None and _qualname(type(old)) != _qualname(type(instance)):
        raise ValueError(
            f"workload name {instance.name!r} is taken by {_qualname(type(old))}; "
            f"{_qualname(type(instance))} needs another name"
        )
    ep = _entry_points().get(instance.name)
    if old is None and ep is not None and not _is_entry_point(ep, cls):
        raise ValueError(
            f"workload name {instance.name!r} is reserved by the entry point {ep.value!r} "
            f"({_entry_point_class(ep)}); {_qualname(cls)} needs another name"
        )
    _REGISTRY[instance.name] = instance
    return workload if isinstance(workload, type) else instance  # type: ignore[return-value]


def _is_entry_point(ep: metadata.EntryPoint, cls: type) -> bool:
    """Whether ``cls`` is the class entry point ``ep`` names (without importing it when it is
    that module's own class, which may be registering while its module loads)."""
    module, attr = ep.module, ep.attr
    if cls.__qualname__ == attr and (
        cls.__module__ == module or cls.__module__.startswith(module + ".")
    ):
        return True
    try:
        return ep.load() is cls
    except Exception:  # a broken entry point still reserves its name
        return False


def _entry_point_class(ep: metadata.EntryPoint) -> str:
    try:
        return _qualname(ep.load())
    except Exception as exc:
        return f"not loadable: {type(exc).__name__}"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_workloads() -> list[str]:
    """Names of the registered workloads and of every ``stabilitykit.workloads`` entry point."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_workload(workload: str | type[Workload] | Workload) -> Workload:
    """The registered workload of that name (loading its entry point on first use), or the class
    or instance given, registered on the way."""
    if not isinstance(workload, str):
        instance = register_workload(workload)
        return _REGISTRY[instance.name]
    if workload not in _REGISTRY:
        ep = _entry_points().get(workload)
        if ep is None:
            raise ValueError(
                f"workload: got {workload!r}; allowed: one of {available_workloads()} (or "
                "register your own with stabilitykit.register_workload)"
            )
        register_workload(ep.load())
    return _REGISTRY[workload]
