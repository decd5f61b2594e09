"""Unit tests run torch on one CPU thread: small tensors gain nothing from more, and two
processes (pytest-xdist) would otherwise oversubscribe the cores."""

import torch

torch.set_num_threads(1)
