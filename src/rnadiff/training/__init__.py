"""Training: the loop (the only owner of an optimizer), EMA and checkpoints."""

from rnadiff.training._checkpoint import load_checkpoint, save_checkpoint
from rnadiff.training._ema import make_ema, update_ema
from rnadiff.training._loop import Trainer, batch_indices, lr_at

__all__ = [
    "Trainer",
    "batch_indices",
    "load_checkpoint",
    "lr_at",
    "make_ema",
    "save_checkpoint",
    "update_ema",
]
