"""Drop-in modules: torchvision's MobileNetV2, InceptionV3 and SSDLite blocks running fastconv's fused ops in eval.

Each class subclasses the torchvision module it replaces (same constructor, ``state_dict`` keys, ``repr``
and ``isinstance``). Training mode computes exactly what torchvision computes; eval mode folds every
BatchNorm into its conv (cached until a weight or statistic changes) and runs the fused ops, keeping
activations channels_last. ``fastconv.convert(model)`` swaps them into an existing model.
"""

from fastconv.nn.inception import (
    BasicConv2d,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)
from fastconv.nn.mobilenet import Conv2dNormActivation, InvertedResidual
from fastconv.nn.ssdlite import SSDLitePredictionBlock

__all__ = [
    "BasicConv2d",
    "Conv2dNormActivation",
    "InceptionA",
    "InceptionAux",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InvertedResidual",
    "SSDLitePredictionBlock",
]
