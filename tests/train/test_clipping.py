import math

import pytest
import torch
from torch import nn

from stabilitykit.models.spectral import SpectralConv2d
from stabilitykit.train.clipping import (
    CLIP_ALGORITHMS,
    Clipper,
    agc_tensor,
    agc_unit,
    clip_by_global_norm,
    clip_by_value,
    final_layer_name,
    global_grad_norm,
    output_unit_dim,
    unitwise_norm,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _set_grads(model: nn.Module, scale: float, seed: int = 1) -> list[torch.Tensor]:
    gen = _gen(seed)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=gen)
    return [p.grad.clone() for p in model.parameters()]


# --- global norm ------------------------------------------------------------------------------


def test_global_grad_norm_is_l2_over_all_tensors_real_and_complex():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]]), torch.tensor([12j])]
    norm = global_grad_norm(grads)
    assert norm.ndim == 0
    assert norm.item() == pytest.approx(13.0)
    assert global_grad_norm([]).item() == 0.0


@pytest.mark.parametrize("scale", [10.0, 0.01])
def test_clip_by_global_norm_matches_torch(scale):
    gen = _gen()
    ours = [scale * torch.randn(s, generator=gen) for s in [(4, 3), (7,), (2, 2, 3)]]
    theirs = [g.clone().requires_grad_() for g in ours]
    for t, g in zip(theirs, ours, strict=True):
        t.grad = g.clone()
    clip_by_global_norm(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for t, g in zip(theirs, ours, strict=True):
        torch.testing.assert_close(g, t.grad, rtol=0, atol=0)


def test_clip_by_value_clamps_elements_only_beyond_the_value():
    grad = torch.tensor([-3.0, -0.5, 0.2, 7.0])
    clip_by_value([grad], 1.0)
    assert grad.tolist() == [-1.0, -0.5, pytest.approx(0.2), 1.0]


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, None, True])
def test_clip_functions_reject_bad_thresholds(bad):
    with pytest.raises(ValueError, match="must be a finite number > 0, got"):
        clip_by_global_norm([torch.ones(2)], bad)
    with pytest.raises(ValueError, match="must be a finite number > 0, got"):
        clip_by_value([torch.ones(2)], bad)


# --- AGC per tensor ---------------------------------------------------------------------------


def test_agc_tensor_by_hand():
    param = torch.tensor([3.0, 4.0])  # ||W|| = 5, limit = 0.1 * 5 = 0.5
    big = torch.tensor([0.0, 2.0])  # ||G|| = 2 > 0.5: scaled by 0.25
    torch.testing.assert_close(agc_tensor(big, param, clipping=0.1), torch.tensor([0.0, 0.5]))
    assert big.tolist() == [0.0, 2.0], "agc_tensor must not change its input"
    small = torch.tensor([0.3, 0.0])  # 0.3 <= 0.5: unchanged
    torch.testing.assert_close(agc_tensor(small, param, clipping=0.1), small)


def test_agc_tensor_uses_eps_floor_for_zero_weights():
    # limit = 0.01 * max(0, 1e-3) = 1e-5
    clipped = agc_tensor(torch.tensor([1.0, 0.0]), torch.zeros(2), clipping=0.01, eps=1e-3)
    torch.testing.assert_close(clipped, torch.tensor([1e-5, 0.0]))
    assert agc_tensor(torch.zeros(2), torch.zeros(2)).tolist() == [0.0, 0.0]


def test_agc_tensor_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        agc_tensor(torch.ones(2), torch.ones(3))


# --- unit-wise norm and AGC per unit ----------------------------------------------------------


def test_unitwise_norm_per_output_unit():
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])  # Linear (out=3, in=2)
    torch.testing.assert_close(unitwise_norm(w), torch.tensor([[5.0], [1.0], [1.0]]))
    conv = torch.randn(5, 2, 3, 3, generator=_gen())
    expected = conv.flatten(1).norm(dim=1).reshape(5, 1, 1, 1)
    torch.testing.assert_close(unitwise_norm(conv), expected)
    transposed = torch.randn(2, 5, 3, 3, generator=_gen())  # ConvTranspose (in, out, k, k)
    expected = transposed.transpose(0, 1).flatten(1).norm(dim=1).reshape(1, 5, 1, 1)
    torch.testing.assert_close(unitwise_norm(transposed, unit_dim=1), expected)


@pytest.mark.parametrize("shape", [(), (4,), (4, 1, 1), (1, 4)])
def test_unitwise_norm_of_scalars_and_vectors_is_the_whole_norm(shape):
    x = torch.arange(1.0, 5.0)[: max(1, math.prod(shape))].reshape(shape)
    norm = unitwise_norm(x)
    assert norm.shape == (1,) * len(shape)
    assert norm.item() == pytest.approx(x.norm().item())


def test_unitwise_norm_of_spectral_weight_is_per_output_channel():
    layer = SpectralConv2d(3, 5, 4, 2)
    dim = output_unit_dim(layer, "weight")
    w = layer.weight.detach()
    norm = unitwise_norm(w, dim)
    assert norm.shape[dim] == 5 and norm.numel() == 5
    # the Frobenius norm of each output channel's complex multipliers
    complex_w = layer.spectral_weights().detach()  # (band, in, out, mx, my)
    expected = complex_w.transpose(0, 2).reshape(5, -1).abs().norm(dim=1)
    torch.testing.assert_close(norm.flatten(), expected)


def test_unitwise_norm_rejects_bad_unit_dim():
    with pytest.raises(
        ValueError, match=r"unit_dim must be in \[-2, 2\) for shape \(3, 4\), got 2"
    ):
        unitwise_norm(torch.ones(3, 4), unit_dim=2)


def test_agc_unit_bounds_each_unit_and_keeps_directions():
    gen = _gen()
    param = torch.randn(6, 5, generator=gen)
    grad = (
        torch.randn(6, 5, generator=gen) * torch.tensor([1e-4, 1e-4, 1.0, 1.0, 5.0, 1e-4])[:, None]
    )
    clipping = 0.05
    clipped = agc_unit(grad, param, clipping=clipping)
    limits = clipping * param.norm(dim=1).clamp_min(1e-3)
    norms_before, norms_after = grad.norm(dim=1), clipped.norm(dim=1)
    assert (norms_after <= limits * (1 + 1e-5)).all()
    under = norms_before <= limits
    assert under.any() and (~under).any(), "the case must have units on both sides"
    assert torch.equal(clipped[under], grad[under])
    torch.testing.assert_close(norms_after[~under], limits[~under])
    cosine = torch.nn.functional.cosine_similarity(clipped, grad, dim=1)
    torch.testing.assert_close(cosine, torch.ones(6))


def test_agc_unit_on_spectral_weight_bounds_each_output_channel():
    layer = SpectralConv2d(2, 3, 2, 2)
    dim = output_unit_dim(layer, "weight")
    param = layer.weight.detach()
    grad = torch.randn(param.shape, generator=_gen())
    clipped = agc_unit(grad, param, clipping=0.01, unit_dim=dim)
    limits = 0.01 * unitwise_norm(param, dim)
    assert (unitwise_norm(clipped, dim) <= limits * (1 + 1e-5)).all()
    torch.testing.assert_close(unitwise_norm(clipped, dim), limits)


def test_output_unit_dims():
    assert output_unit_dim(nn.Linear(2, 3), "weight") == 0
    assert output_unit_dim(nn.Conv2d(2, 3, 3), "weight") == 0
    assert output_unit_dim(nn.ConvTranspose2d(2, 3, 2), "weight") == 1
    layer = SpectralConv2d(3, 5, 4, 2)
    assert layer.weight.shape[output_unit_dim(layer, "weight")] == 5
    declared = nn.Linear(2, 3)
    declared.output_unit_dims = {"weight": 1}
    assert output_unit_dim(declared, "weight") == 1


# --- Clipper ----------------------------------------------------------------------------------


def test_clipper_norm_reports_hand_computed_norms():
    model = _mlp()
    before = _set_grads(model, 10.0)
    expected_pre = math.sqrt(sum((g**2).sum().item() for g in before))
    pre, post = Clipper("norm", 1.0)(model)
    assert pre.ndim == 0 and post.ndim == 0
    assert pre.item() == pytest.approx(expected_pre, rel=1e-6)
    assert post.item() == pytest.approx(1.0, rel=1e-5)
    measured = global_grad_norm([p.grad for p in model.parameters()])
    assert post.item() == pytest.approx(measured.item(), rel=1e-6)
    for p, g in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, g / (expected_pre + 1e-6))


def test_clipper_none_leaves_grads_and_reports_one_norm():
    model = _mlp()
    before = _set_grads(model, 10.0)
    pre, post = Clipper("none")(model)
    assert pre.item() == post.item()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))


def test_clipper_value_matches_clamped_norm():
    model = _mlp()
    before = _set_grads(model, 1.0)
    pre, post = Clipper("value", 0.5)(model)
    clamped = [g.clamp(-0.5, 0.5) for g in before]
    assert post.item() == pytest.approx(math.sqrt(sum((g**2).sum().item() for g in clamped)))
    assert pre.item() > post.item()


def test_clipper_agc_per_tensor_matches_agc_tensor():
    model = _mlp()
    before = _set_grads(model, 1.0)
    params = [p.detach().clone() for p in model.parameters()]
    _, post = Clipper("agc", 0.01)(model)
    expected = [agc_tensor(g, w, 0.01) for g, w in zip(before, params, strict=True)]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    assert post.item() == pytest.approx(global_grad_norm(expected).item(), rel=1e-6)


def test_clipper_agc_unit_skips_the_final_layer_by_default():
    model = _mlp()
    before = _set_grads(model, 1.0)
    assert final_layer_name(model) == "2"
    clipper = Clipper("agc_unit", 0.01)
    pre, post = clipper(model)
    first, head = model[0], model[2]
    torch.testing.assert_close(first.weight.grad, agc_unit(before[0], first.weight, 0.01))
    torch.testing.assert_close(first.bias.grad, agc_unit(before[1], first.bias, 0.01))
    assert torch.equal(head.weight.grad, before[2]) and torch.equal(head.bias.grad, before[3])
    expected_post = global_grad_norm([p.grad for p in model.parameters()])
    assert post.item() == pytest.approx(expected_post.item())
    assert pre.item() == pytest.approx(global_grad_norm(before).item())
    assert "final layer" in clipper.description and "skipped" in clipper.description


def test_clipper_agc_unit_with_prefix_or_without_skip():
    model = _mlp()
    before = _set_grads(model, 1.0)
    Clipper("agc_unit", 0.01, final_layer_prefix="0")(model)
    assert torch.equal(model[0].weight.grad, before[0])
    assert not torch.equal(model[2].weight.grad, before[2])
    _set_grads(model, 1.0)
    Clipper("agc_unit", 0.01, skip_final_layer=False)(model)
    assert not torch.equal(model[2].weight.grad, before[2])
    with pytest.raises(ValueError, match="final_layer_prefix 'head' matches no parameter"):
        Clipper("agc_unit", 0.01, final_layer_prefix="head")(model)


def test_clipper_agc_unit_clips_spectral_weights_per_output_channel():
    model = nn.Sequential(SpectralConv2d(2, 3, 2, 2), nn.Conv2d(3, 1, 1))
    _set_grads(model, 1.0)
    Clipper("agc_unit", 0.01)(model)
    spectral = model[0]
    dim = output_unit_dim(spectral, "weight")
    limits = 0.01 * unitwise_norm(spectral.weight.detach(), dim)
    torch.testing.assert_close(unitwise_norm(spectral.weight.grad, dim), limits)


def test_clipper_ignores_parameters_without_gradients():
    model = _mlp()
    _set_grads(model, 10.0)
    model[0].weight.grad = None
    pre, post = Clipper("norm", 1.0)(model)
    assert post.item() == pytest.approx(1.0, rel=1e-5)
    assert model[0].weight.grad is None
    pre, post = Clipper("agc", 0.01)(nn.Linear(2, 2))  # no gradients at all
    assert pre.item() == post.item() == 0.0


def test_clipper_rejects_bad_configuration():
    with pytest.raises(
        ValueError, match=r"algorithm must be one of \('none', 'norm'.*got 'agc_per_unit'"
    ):
        Clipper("agc_per_unit", 0.01)
    with pytest.raises(ValueError, match="value must be a finite number > 0, got None"):
        Clipper("norm")
    with pytest.raises(ValueError, match="value must be a finite number > 0, got -1"):
        Clipper("agc", -1)
    with pytest.raises(ValueError, match=r"value must be None when algorithm is 'none', got 1\.0"):
        Clipper("none", 1.0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0"):
        Clipper("agc", 0.01, eps=0)
    with pytest.raises(ValueError, match="final_layer_prefix must be a module name or None"):
        Clipper("agc_unit", 0.01, final_layer_prefix="")


@pytest.mark.parametrize(
    ("algorithm", "value", "words"),
    [
        ("none", None, "no gradient clipping"),
        ("norm", 1.0, "max_norm=1"),
        ("value", 0.5, "[-0.5, 0.5]"),
        ("agc", 0.01, "agc per tensor"),
        ("agc_unit", 0.01, "agc per unit (Brock et al. 2021), lambda=0.01"),
    ],
)
def test_clipper_description_names_what_ran(algorithm, value, words):
    assert algorithm in CLIP_ALGORITHMS
    assert words in Clipper(algorithm, value).description
