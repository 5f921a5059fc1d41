"""Building blocks shared by the model builders."""

from mmanet.nn.mlp import ConvEncoder, MLPEncoder, MLPHead, mlp_layers

__all__ = ["ConvEncoder", "MLPEncoder", "MLPHead", "mlp_layers"]
