"""Weight initialisation shared by the zoo's own classes (it does not affect loading published checkpoints)."""
from __future__ import annotations

import torch.nn as nn


def he_init_(module: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = True) -> nn.Module:
    """He (fan-out, ReLU) normal convolutions with zero biases; BatchNorm weight 1, bias 0; Linear weights
    N(0, ``linear_std``) when given (else PyTorch's default) and zero biases when ``zero_linear_bias``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias:
                nn.init.zeros_(m.bias)
    return module
