"""Building blocks shared by the model builders."""

from mmanet.nn.mlp import ConvEncoder, MLPEncoder, MLPHead, mlp_layers
from mmanet.nn.resnet import (
    BasicBlock,
    Bottleneck,
    ResNetStem,
    init_resnet_weights,
    load_torchvision_weights,
    make_layer,
)
from mmanet.nn.se import SEBlock

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvEncoder",
    "MLPEncoder",
    "MLPHead",
    "ResNetStem",
    "SEBlock",
    "init_resnet_weights",
    "load_torchvision_weights",
    "make_layer",
    "mlp_layers",
]
