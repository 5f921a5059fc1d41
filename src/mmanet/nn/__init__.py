"""Building blocks shared by the model builders."""

from mmanet.nn.esanet_blocks import DecoderModule, LearnedUpsample, PyramidPooling, SEFusionAdd
from mmanet.nn.folding import fold_batch_norms
from mmanet.nn.mlp import ConvEncoder, MLPEncoder, MLPHead, mlp_layers
from mmanet.nn.nonbottleneck import NonBottleneck1D
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
    "DecoderModule",
    "LearnedUpsample",
    "MLPEncoder",
    "MLPHead",
    "NonBottleneck1D",
    "PyramidPooling",
    "ResNetStem",
    "SEBlock",
    "SEFusionAdd",
    "fold_batch_norms",
    "init_resnet_weights",
    "load_torchvision_weights",
    "make_layer",
    "mlp_layers",
]
