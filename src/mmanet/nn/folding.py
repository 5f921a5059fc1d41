"""Folding a frozen network's batch normalisation into the convolution before it.

In eval mode, ``BN(conv(x)) = γ (W x + b - μ) / √(σ² + ε) + β`` is one convolution with
weight ``W s`` and bias ``(b - μ) s + β``, ``s = γ / √(σ² + ε)`` per output channel: the
same function with one kernel (and one pass over memory) less. The frozen teacher runs
folded (:class:`mmanet.engine.Trainer` loads it so).

Which batch norm reads which convolution's output is a fact about a module's ``forward``,
not about its attributes, so it is never guessed from names:

- in an ``nn.Sequential``, a ``Conv2d`` directly followed by a ``BatchNorm2d`` is a pair;
- any other module lists its pairs in a class attribute ``FOLDABLE``, e.g.
  ``(("conv1", "bn1"), ("conv2", "bn2"))`` for :class:`~mmanet.nn.resnet.BasicBlock` —
  only pairs where the batch norm's sole input is the convolution's output and that
  output goes nowhere else.
"""

from __future__ import annotations

import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every declared (conv, batch norm) pair of ``module``, in place: the convolution
    becomes the folded one (with a bias), the batch norm an ``nn.Identity``.

    ``module`` must be in eval mode (the running statistics are what is folded). Returns
    the number of batch norms folded.
    """
    if module.training:
        raise ValueError("fold_batch_norms needs a module in eval mode (call .eval() first)")
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            pairs = list(itertools.pairwise(parent._modules))
        else:
            pairs = list(getattr(type(parent), "FOLDABLE", ()))
        for conv_name, bn_name in pairs:
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if conv is None or bn is None or not _foldable(conv, bn):
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            fused.requires_grad_(conv.weight.requires_grad)
            parent._modules[conv_name] = fused
            parent._modules[bn_name] = nn.Identity()
            folded += 1
    return folded
