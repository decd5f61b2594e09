"""The physics of the model's loss (DOMAIN.md §2): forward model and measurement-domain losses."""

from stabilitykit.physics.forward import far_field_amplitude
from stabilitykit.physics.losses import LOSSES, get_loss, mae_loss, poisson_loss

__all__ = ["LOSSES", "far_field_amplitude", "get_loss", "mae_loss", "poisson_loss"]
