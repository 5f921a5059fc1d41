"""Training, evaluation over all modality combinations, and checkpoints."""

from mmanet.engine.evaluate import combination_confusions, combination_scores, evaluate_split
from mmanet.engine.loader import make_loader
from mmanet.engine.network import load_network
from mmanet.engine.objective import Objective, Step, register_loss_term
from mmanet.engine.trainer import Trainer, resolve_device

__all__ = [
    "Objective",
    "Step",
    "Trainer",
    "combination_confusions",
    "combination_scores",
    "evaluate_split",
    "load_network",
    "make_loader",
    "register_loss_term",
    "resolve_device",
]
