"""Training, evaluation over all modality combinations, and checkpoints."""

from mmanet.engine.evaluate import combination_confusions, evaluate_combinations, evaluate_split
from mmanet.engine.loader import make_loader
from mmanet.engine.trainer import Trainer, load_network

__all__ = [
    "Trainer",
    "combination_confusions",
    "evaluate_combinations",
    "evaluate_split",
    "load_network",
    "make_loader",
]
