"""Gradient clipping, applied after ``backward`` and before the optimiser step.

Every transform is a small function of tensors; :class:`Clipper` picks one by name, clips a model's
gradients in place and returns the global gradient norm before and after, as device tensors (no host
sync, so the loop decides when to read them).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

CLIP_ALGORITHMS = ("none", "norm", "value", "agc", "agc_unit")

_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def global_grad_norm(grads: Sequence[Tensor]) -> Tensor:
    """Global L2 norm ``sqrt(sum_i ||g_i||^2)`` over all tensors, as a 0-d tensor.

    Real and complex gradients alike (``|z|``). An empty sequence gives ``0``.
    """
    grads = list(grads)
    if not grads:
        return torch.zeros(())
    return _l2(torch._foreach_norm(grads))


def global_norm_clip_factor(total_norm: Tensor, max_norm: float) -> Tensor:
    """``min(1, max_norm / (total_norm + 1e-6))``: ``torch.nn.utils.clip_grad_norm_``'s factor."""
    return torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)


def clip_by_global_norm(
    grads: Sequence[Tensor], max_norm: float, *, total_norm: Tensor | None = None
) -> None:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_`` (:func:`global_norm_clip_factor`).
    ``total_norm`` is the already computed :func:`global_grad_norm` of ``grads``, if at hand.
    """
    _check_positive("clip_by_global_norm", "max_norm", max_norm)
    grads = list(grads)
    if not grads:
        return
    total = global_grad_norm(grads) if total_norm is None else total_norm
    torch._foreach_mul_(grads, global_norm_clip_factor(total, max_norm).to(grads[0].device))


def clip_by_value(grads: Sequence[Tensor], clip_value: float) -> None:
    """Clamp every gradient element in place to ``[-clip_value, clip_value]``.

    Complex gradients are clamped on their real and imaginary parts separately.
    """
    _check_positive("clip_by_value", "clip_value", clip_value)
    parts = [torch.view_as_real(g) if g.is_complex() else g for g in grads]
    if not parts:
        return
    torch._foreach_clamp_min_(parts, -clip_value)
    torch._foreach_clamp_max_(parts, clip_value)


def agc_scales(
    grad_norms: Sequence[Tensor], param_norms: Sequence[Tensor], clipping: float, eps: float
) -> list[Tensor]:
    """AGC factors ``min(1, clipping * max(||W||, eps) / ||G||)``, one per (grad, param) norm pair.

    Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without Normalization",
    arXiv:2102.06171, eq. (3). A zero gradient norm gives factor 1; a NaN one stays NaN.
    """
    limits = torch._foreach_mul(torch._foreach_clamp_min(list(param_norms), eps), clipping)
    scales = torch._foreach_div(limits, list(grad_norms))
    torch._foreach_clamp_max_(scales, 1.0)
    return scales


def agc_tensor(grad: Tensor, param: Tensor, clipping: float = 0.01, eps: float = 1e-3) -> Tensor:
    """Adaptive gradient clipping of one whole tensor, as the original study applied it.

    ``limit = clipping * max(||W||, eps)``; if ``||G|| > limit`` then ``G *= limit / ||G||``
    (Frobenius norms over the whole tensor). Returns the clipped gradient; ``grad`` is not changed.
    """
    _check_agc_args("agc_tensor", grad, param, clipping, eps)
    norms = torch._foreach_norm([grad, param])
    (scale,) = agc_scales(norms[:1], norms[1:], clipping, eps)
    return grad * scale


def is_single_unit(x: Tensor) -> bool:
    """Scalars and vectors, singleton dims aside, are one unit (Brock et al.'s NFNets code)."""
    return sum(size > 1 for size in x.shape) <= 1


def unitwise_norm(x: Tensor, unit_dim: int = 0) -> Tensor:
    """L2 norm of each output unit of ``x``, shaped to broadcast against ``x`` (Brock et al. 2021).

    - Scalars and vectors, after squeezing singleton dims (biases, norm gains, LayerScale
      ``(C, 1, 1)``), are ONE unit: the norm of the whole tensor, as in the NFNets code.
    - Otherwise the unit is an index along ``unit_dim`` (torch ``Linear``/``ConvNd`` weights
      ``(out, in, ...)``: 0; ``ConvTransposeNd`` ``(in, out, ...)``: 1): the norm runs over all
      other dims, kept as size 1.
    - Complex tensors use ``|z|``. The 6-d ``SpectralConv2d`` weight stores its complex
      multipliers as a separate re/im axis, with two frequency bands, ``in``, ``out`` and the
      modes (e.g. ``(2, in, out, mx, my, 2)``, or ``(2, 2, mx, my, in, out)``): with ``unit_dim``
      on its ``out`` axis (:func:`output_unit_dim`), a unit is one output channel and its norm
      runs over re/im, both bands, all inputs and all modes: the Frobenius norm of that
      channel's complex multipliers.
    """
    if is_single_unit(x):
        return torch.linalg.vector_norm(x).reshape((1,) * x.ndim)
    if not -x.ndim <= unit_dim < x.ndim:
        raise ValueError(
            f"unitwise_norm: unit_dim must be in [{-x.ndim}, {x.ndim}) for shape "
            f"{tuple(x.shape)}, got {unit_dim}"
        )
    unit_dim %= x.ndim
    units = x.shape[unit_dim]
    # Sum of squares as a column sum over the leading dims, then a row sum per unit: contiguous
    # reductions, several times faster on CPU than a norm over scattered dims (the 6-d spectral
    # weight's unit axis sits between its modes and re/im).
    squares = x.real.square() + x.imag.square() if x.is_complex() else x.square()
    columns = squares.reshape(math.prod(x.shape[:unit_dim]), -1).sum(dim=0)
    norms = columns.reshape(units, -1).sum(dim=1).sqrt()
    return norms.reshape([units if d == unit_dim else 1 for d in range(x.ndim)])


def agc_unit(
    grad: Tensor, param: Tensor, clipping: float = 0.01, eps: float = 1e-3, unit_dim: int = 0
) -> Tensor:
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, arXiv:2102.06171, eq. (3)).

    Per unit ``u`` (see :func:`unitwise_norm`): ``limit_u = clipping * max(||W_u||, eps)``,
    ``G_u *= min(1, limit_u / ||G_u||)``. Returns the clipped gradient; ``grad`` is not changed.
    """
    _check_agc_args("agc_unit", grad, param, clipping, eps)
    (scale,) = agc_scales(
        [unitwise_norm(grad, unit_dim)], [unitwise_norm(param, unit_dim)], clipping, eps
    )
    return grad * scale


def output_unit_dim(module: nn.Module, param_name: str) -> int:
    """The dim of ``module``'s parameter ``param_name`` that indexes output units.

    A layer may declare it: ``module.output_unit_dims = {"weight": 5}`` (``SpectralConv2d``
    does, from its weight layout). Otherwise ``ConvTransposeNd.weight`` ``(in, out/groups,
    ...)``: 1 (with ``groups > 1`` a unit spans that output index in every group); anything else
    follows torch's ``(out, ...)`` layout: 0.
    """
    declared = getattr(module, "output_unit_dims", None)
    if declared is not None and param_name in declared:
        return int(declared[param_name])
    if param_name == "weight" and isinstance(module, _TRANSPOSED_CONVS):
        return 1
    return 0


def final_layer_name(model: nn.Module) -> str:
    """Name of the last module (registration order) that owns parameters: the output head."""
    owners = [name for name, m in model.named_modules() if any(True for _ in m.parameters(False))]
    if not owners:
        raise ValueError(f"final_layer_name: expected a model with parameters, got {type(model)}")
    return owners[-1]


@dataclass(frozen=True)
class Clipped:
    """What one clipping call saw: global norms before and after (0-d device tensors), the
    parameters with a gradient and each one's pre-clip gradient norm, in the same order."""

    preclip: Tensor
    postclip: Tensor
    params: list[nn.Parameter]
    norms: Sequence[Tensor]


@dataclass(frozen=True)
class Clipper:
    """Gradient clipping chosen by name; call it on the model after ``backward``.

    Args:
        algorithm: one of :data:`CLIP_ALGORITHMS`: ``none``; ``norm`` (global L2 norm to
            ``value``); ``value`` (element clamp to ``±value``); ``agc`` (per parameter tensor,
            lambda ``value``, the original study); ``agc_unit`` (per output unit, lambda
            ``value``, final layer skipped: Brock et al. 2021).
        value: max norm, clip value or AGC lambda; a finite number > 0, or None for ``none``.
        eps: AGC floor on the weight norm.
        final_layer_prefix: ``agc_unit`` only: parameters named ``prefix`` or ``prefix.*`` are
            the final layer. None: the last module that owns parameters (:func:`final_layer_name`).
        skip_final_layer: ``agc_unit`` only: leave the final layer unclipped (Brock et al.).
    """

    algorithm: str
    value: float | None = None
    eps: float = 1e-3
    final_layer_prefix: str | None = None
    skip_final_layer: bool = True

    def __post_init__(self) -> None:
        if self.algorithm not in CLIP_ALGORITHMS:
            raise ValueError(
                f"Clipper: algorithm must be one of {CLIP_ALGORITHMS}, got {self.algorithm!r}"
            )
        if self.algorithm == "none":
            if self.value is not None:
                raise ValueError(
                    f"Clipper: value must be None when algorithm is 'none', got {self.value!r}"
                )
        else:
            _check_positive("Clipper", "value", self.value)
        _check_positive("Clipper", "eps", self.eps)
        prefix = self.final_layer_prefix
        if prefix is not None and not (isinstance(prefix, str) and prefix):
            raise ValueError(
                f"Clipper: final_layer_prefix must be a module name or None, got {prefix!r}"
            )

    @property
    def description(self) -> str:
        """One line for the run record: which clipping ran, with its numbers."""
        v = self.value
        if self.algorithm == "none":
            return "no gradient clipping"
        if self.algorithm == "norm":
            return f"global L2 norm clip (clip_grad_norm_ rule), max_norm={v:g}"
        if self.algorithm == "value":
            return f"element value clip to [-{v:g}, {v:g}]"
        if self.algorithm == "agc":
            return f"agc per tensor (original study), lambda={v:g}, eps={self.eps:g}, all layers"
        if not self.skip_final_layer:
            final = "final layer clipped too"
        elif self.final_layer_prefix is None:
            final = "final layer (last module with parameters) skipped"
        else:
            final = f"final layer {self.final_layer_prefix!r} skipped"
        return f"agc per unit (Brock et al. 2021), lambda={v:g}, eps={self.eps:g}, {final}"

    def __call__(self, model: nn.Module) -> tuple[Tensor, Tensor]:
        """Clip ``model``'s gradients in place; return ``(grad_norm_preclip, grad_norm_postclip)``.

        Both are global L2 norms over all gradients (skipped final layer included), 0-d tensors
        on the gradients' device. ``none`` returns the same tensor twice; ``norm`` and ``agc``
        derive the post-clip norm from the norms and factors they computed (equal up to
        rounding, one pass over the gradients fewer); ``value`` and ``agc_unit`` measure it.
        """
        clipped = self.clip(model)
        return clipped.preclip, clipped.postclip

    def clip(self, model: nn.Module) -> Clipped:
        """As ``__call__``, also returning the per-parameter pre-clip norms the global norm was
        computed from (for per-layer telemetry: no norm is computed twice)."""
        with torch.no_grad():
            params = [p for p in model.parameters() if p.grad is not None]
            grads = [p.grad for p in params]
            if not grads:
                return Clipped(torch.zeros(()), torch.zeros(()), [], [])
            norms = torch._foreach_norm(grads)
            pre = _l2(norms)
            if self.algorithm == "agc":
                scales = agc_scales(norms, torch._foreach_norm(params), self.value, self.eps)
                _foreach_scale_(grads, scales)
                return Clipped(pre, _l2(torch._foreach_mul(norms, scales)), params, norms)
            if self.algorithm == "none":
                return Clipped(pre, pre, params, norms)
            if self.algorithm == "norm":
                factor = global_norm_clip_factor(pre, self.value)
                torch._foreach_mul_(grads, factor)
                return Clipped(pre, pre * factor, params, norms)
            if self.algorithm == "value":
                clip_by_value(grads, self.value)
            else:
                self._clip_units(model)
            return Clipped(pre, global_grad_norm(grads), params, norms)

    def _clip_units(self, model: nn.Module) -> None:
        """``agc_unit`` in place; single-unit tensors (biases, gains) in one fused batch."""
        targets = self.unit_targets(model)
        whole = [p for p, _ in targets if is_single_unit(p)]
        units = [(p, dim) for p, dim in targets if not is_single_unit(p)]
        if whole:
            grads = [p.grad for p in whole]
            norms = torch._foreach_norm(grads), torch._foreach_norm(whole)
            _foreach_scale_(grads, agc_scales(*norms, self.value, self.eps))
        if units:
            scales = agc_scales(
                [unitwise_norm(p.grad, dim) for p, dim in units],
                [unitwise_norm(p, dim) for p, dim in units],
                self.value,
                self.eps,
            )
            _foreach_scale_([p.grad for p, _ in units], scales)

    def unit_targets(self, model: nn.Module) -> list[tuple[nn.Parameter, int]]:
        """``agc_unit``'s targets: each parameter with a gradient and its output-unit dim
        (:func:`output_unit_dim`), the final layer left out when it is skipped."""
        final = None
        if self.skip_final_layer:
            final = self.final_layer_prefix or final_layer_name(model)
        targets: list[tuple[nn.Parameter, int]] = []
        seen: set[int] = set()
        skipped = 0
        for module_name, module in model.named_modules():
            for param_name, p in module.named_parameters(recurse=False):
                if p.grad is None or id(p) in seen:
                    continue
                seen.add(id(p))
                name = f"{module_name}.{param_name}" if module_name else param_name
                if final is not None and _belongs(name, final):
                    skipped += 1
                else:
                    targets.append((p, output_unit_dim(module, param_name)))
        if self.skip_final_layer and self.final_layer_prefix is not None and not skipped:
            raise ValueError(
                f"Clipper: final_layer_prefix {final!r} matches no parameter with a gradient in "
                f"{type(model).__name__}; expected a module name, e.g. {final_layer_name(model)!r}"
            )
        return targets


def _belongs(param_name: str, module_name: str) -> bool:
    """Whether ``param_name`` lives in module ``module_name`` ("" is the root module itself)."""
    if not module_name:
        return "." not in param_name
    return param_name == module_name or param_name.startswith(module_name + ".")


def _l2(norms: Sequence[Tensor]) -> Tensor:
    """L2 norm of a list of 0-d norms, on the first one's device."""
    device = norms[0].device
    if any(n.device != device for n in norms):
        norms = [n.to(device) for n in norms]
    return torch.linalg.vector_norm(torch.stack(list(norms)))


def _foreach_scale_(tensors: list[Tensor], scales: Iterable[Tensor]) -> None:
    if tensors:
        torch._foreach_mul_(tensors, list(scales))


def _check_positive(where: str, name: str, value: object) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")


def _check_agc_args(where: str, grad: Tensor, param: Tensor, clipping: float, eps: float) -> None:
    if grad.shape != param.shape:
        raise ValueError(
            f"{where}: grad and param must have the same shape, got {tuple(grad.shape)} "
            f"and {tuple(param.shape)}"
        )
    _check_positive(where, "clipping", clipping)
    _check_positive(where, "eps", eps)
