import pytest

from stabilitykit.arm import SCALES, Arm, apply_scale, scale_changes
from stabilitykit.workloads.gridlines.study import AGC, CONTROL, DEEP_CONTROL, STABLE


def test_replace_derives_a_variant_and_changes_the_hash():
    deep = CONTROL.replace(fno_blocks=8)
    assert deep.fno_blocks == 8 and CONTROL.fno_blocks == 4
    assert deep.hash != CONTROL.hash
    assert CONTROL.replace(name="renamed").hash == CONTROL.hash  # the name changes no number


def test_hash_is_stable_and_covers_data_and_seed():
    assert Arm().hash == Arm().hash and len(Arm().hash) == 16
    assert CONTROL.replace(seed=1).hash != CONTROL.hash
    assert CONTROL.replace(seed=1).family_hash == CONTROL.family_hash
    assert CONTROL.replace(data=CONTROL.data.replace(nphotons=1e6)).hash != CONTROL.hash
    assert CONTROL.replace(device="cuda").hash != CONTROL.hash


def test_id_is_readable_and_filesystem_safe():
    assert DEEP_CONTROL.id == "deep_control-hybrid-b8-seed20260128"
    assert all(c.isalnum() or c in "-_." for c in STABLE.id)


def test_round_trip():
    assert Arm.from_dict(AGC.to_dict()) == AGC
    with pytest.raises(ValueError, match="unknown field"):
        Arm.from_dict({**AGC.to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    ("changes", "field", "allowed"),
    [
        ({"architecture": "transformer"}, "architecture", "hybrid"),
        ({"lr": 0.0}, "lr", "> 0"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"epochs": 0}, "epochs", "positive int"),
        ({"batch_size": -16}, "batch_size", "positive int"),
        ({"clip": "sometimes"}, "clip", "agc"),
        ({"clip": "norm", "clip_value": None}, "clip_value", "> 0"),
        ({"clip": "none", "clip_value": 1.0}, "clip_value", "None when clip is 'none'"),
        ({"optimizer": "lion"}, "optimizer", "adamw"),
        ({"scheduler": "cyclic"}, "scheduler", "warmup_cosine"),
        ({"loss": "mse"}, "loss", "poisson"),
        ({"device": "gpu"}, "device", "cuda"),
        ({"name": "../../etc"}, "name", "A-Za-z0-9"),
        ({"fno_blocks": 0}, "fno_blocks", "positive int"),
        ({"layerscale_init": 1e-3}, "layerscale_init", "None for architecture 'hybrid'"),
        ({"warmup_epochs": 50}, "warmup_epochs", "[0, epochs=50)"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(changes, field, allowed):
    with pytest.raises(ValueError) as info:
        CONTROL.replace(**changes)
    assert field in str(info.value) and allowed in str(info.value)


def test_modes_too_large_for_the_grid_is_rejected_before_training():
    with pytest.raises(ValueError, match="modes"):
        CONTROL.replace(architecture="fno", modes=40)


def test_scales_change_sizes_never_meaning():
    for scale in SCALES:
        scaled = apply_scale(STABLE, scale)
        assert scaled.scale == scale
        for field in ("architecture", "clip", "clip_value", "loss", "seed", "optimizer"):
            assert getattr(scaled, field) == getattr(STABLE, field)
        assert scaled.fno_blocks == STABLE.fno_blocks
        assert scaled.layerscale_init == STABLE.layerscale_init
        # a recipe change is the scale's declared one, and it is listed among its changes
        recipe = STABLE.workload_impl.scale(scale).recipe
        assert scaled.lr == recipe.get("lr", STABLE.lr)
        changes = scale_changes(STABLE, scaled)
        assert ("lr" in changes) == ("lr" in recipe and recipe["lr"] != STABLE.lr)


def test_as_written_runs_the_arm_unchanged():
    assert apply_scale(STABLE, "none") == STABLE
    assert scale_changes(STABLE, apply_scale(STABLE, "none")) == {}


def test_full_scale_is_the_seed_configuration():
    full = apply_scale(DEEP_CONTROL, "full")
    spec = full.data
    assert (spec.N, spec.gridsize, spec.nimgs_train, spec.nimgs_test) == (64, 1, 2, 2)
    assert spec.nphotons == 1e9 and spec.seed == 20260128 and full.seed == 20260128
    assert (full.loss, full.clip, full.clip_value, full.fno_blocks, full.epochs) == (
        "mae",
        "norm",
        1.0,
        8,
        50,
    )
    assert full.hash == DEEP_CONTROL.hash  # the full scale is the arm as written


def test_unknown_scale():
    with pytest.raises(ValueError, match="scale: got 'huge'"):
        apply_scale(CONTROL, "huge")
