"""Training, evaluation over all modality combinations, and checkpoints."""

from mmanet.engine.evaluate import combination_confusions, evaluate_combinations
from mmanet.engine.trainer import Trainer, load_network, make_loader

__all__ = [
    "Trainer",
    "combination_confusions",
    "evaluate_combinations",
    "load_network",
    "make_loader",
]
