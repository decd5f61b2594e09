import itertools
import math

import pytest
import torch

from stabilitykit.train.schedulers import (
    SCHEDULERS,
    EpochScheduler,
    build_scheduler,
    warmup_cosine_factor,
)

LR = 1e-3


def _optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _run(scheduler: EpochScheduler, val_losses: list[float]) -> list[float]:
    """The lr used in each epoch, stepping as the training loop does."""
    lrs = []
    for val_loss in val_losses:
        lrs.append(scheduler.lr)
        scheduler.optimizer.step()
        scheduler.step(val_loss)
    return lrs


def test_constant_stays_put():
    scheduler = build_scheduler(_optimizer(), "constant", epochs=5)
    assert _run(scheduler, [1.0, 2.0, 0.5, 3.0, 3.0]) == [LR] * 5
    assert scheduler.lr == LR


def test_warmup_cosine_rises_then_decays_to_min_lr():
    epochs, warmup, min_lr = 20, 4, 1e-5
    scheduler = build_scheduler(
        _optimizer(), "warmup_cosine", epochs=epochs, warmup_epochs=warmup, min_lr=min_lr
    )
    lrs = _run(scheduler, [1.0] * epochs)
    rise, decay = lrs[: warmup + 1], lrs[warmup:]
    assert all(a < b for a, b in itertools.pairwise(rise))
    assert lrs[warmup] == pytest.approx(LR)
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert lrs[-1] < 0.03 * LR  # the last epoch trains just above min_lr
    assert scheduler.lr == pytest.approx(min_lr)  # after the last epoch's step


def test_warmup_cosine_factor_by_hand():
    assert warmup_cosine_factor(0, epochs=10, warmup_epochs=1) == pytest.approx(0.5)
    assert warmup_cosine_factor(1, epochs=10, warmup_epochs=1) == pytest.approx(1.0)
    halfway = warmup_cosine_factor(6, epochs=11, warmup_epochs=1, min_ratio=0.2)
    assert halfway == pytest.approx(0.6)  # cos(pi / 2) = 0: midway between 1 and 0.2
    assert warmup_cosine_factor(11, epochs=11, warmup_epochs=1, min_ratio=0.2) == pytest.approx(0.2)


def test_plateau_halves_after_patience_epochs_without_improvement_and_not_before():
    patience = 3
    scheduler = build_scheduler(_optimizer(), "plateau", epochs=20, plateau_patience=patience)
    # epoch 0 sets the best; epochs 1..3 do not improve (tolerated); epoch 4 is one too many
    lrs = _run(scheduler, [1.0, 1.0, 1.2, 1.0, 1.1])
    assert lrs == [LR] * 5
    assert scheduler.lr == pytest.approx(LR / 2)


def test_plateau_improvement_resets_the_count():
    scheduler = build_scheduler(_optimizer(), "plateau", epochs=20, plateau_patience=2)
    _run(scheduler, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5])  # improves at epoch 3: never 3 bad in a row
    assert scheduler.lr == LR
    scheduler.optimizer.step()
    scheduler.step(0.5)
    assert scheduler.lr == pytest.approx(LR / 2)


def test_plateau_respects_min_lr():
    scheduler = build_scheduler(
        _optimizer(), "plateau", epochs=50, plateau_patience=0, plateau_factor=0.1, min_lr=1e-5
    )
    _run(scheduler, [1.0] * 10)
    assert scheduler.lr == pytest.approx(1e-5)


def test_unknown_name_lists_the_schedulers():
    with pytest.raises(ValueError, match=r"one of \(.*'warmup_cosine', 'plateau', 'step'\)"):
        build_scheduler(_optimizer(), "cosine", epochs=5)
    assert set(SCHEDULERS) == {"constant", "warmup_cosine", "plateau", "step"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "constant", "epochs": 0}, "epochs must be an int >= 1, got 0"),
        (
            {"name": "warmup_cosine", "epochs": 5, "warmup_epochs": 5},
            "warmup_epochs must be < epochs",
        ),
        (
            {"name": "plateau", "epochs": 5, "plateau_factor": 1.0},
            r"plateau_factor must be in \(0, 1\)",
        ),
        ({"name": "plateau", "epochs": 5, "min_lr": 1.0}, r"min_lr must be in \[0, 0.001\]"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpochScheduler(_optimizer(), **kwargs)


def test_lr_is_a_python_float_for_the_record():
    scheduler = build_scheduler(_optimizer(), "warmup_cosine", epochs=3)
    assert isinstance(scheduler.lr, float) and math.isfinite(scheduler.lr)


def test_step_halves_the_lr_every_step_epochs():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, "step", epochs=10, step_epochs=3, gamma=0.5)
    lrs = []
    for _ in range(7):
        lrs.append(sched.lr)
        opt.step()
        sched.step(1.0)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="gamma"):
        build_scheduler(opt, "step", epochs=10, gamma=0.0)
