"""``fastconv.convert(model)``: swaps fastconv's modules into an existing torchvision model, in place."""

from __future__ import annotations

import sys
import types
from typing import TypeVar

from torch import nn
from torchvision.models import inception, mobilenetv2
from torchvision.models.detection import ssdlite
from torchvision.ops import misc

from fastconv import nn as fnn
from fastconv.nn.ssdlite import is_prediction_block

__all__ = ["PREDICTION_HEADS", "REPLACEMENTS", "convert"]

# Exactly these torchvision classes are replaced: a subclass may override forward (torchvision's
# quantizable models do), so it is left alone.
REPLACEMENTS: dict[type[nn.Module], type[nn.Module]] = {
    mobilenetv2.InvertedResidual: fnn.InvertedResidual,
    misc.Conv2dNormActivation: fnn.Conv2dNormActivation,
    inception.BasicConv2d: fnn.BasicConv2d,
    inception.InceptionA: fnn.InceptionA,
    inception.InceptionB: fnn.InceptionB,
    inception.InceptionC: fnn.InceptionC,
    inception.InceptionD: fnn.InceptionD,
    inception.InceptionE: fnn.InceptionE,
    inception.InceptionAux: fnn.InceptionAux,
}

# torchvision builds SSDLite's depthwise-separable prediction blocks as plain nn.Sequential, so they are
# recognised by their place, in the module_list of exactly these heads, and by their layers.
PREDICTION_HEADS: tuple[type[nn.Module], ...] = (ssdlite.SSDLiteClassificationHead, ssdlite.SSDLiteRegressionHead)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def convert(model: ModuleT) -> ModuleT:
    """Replaces, in place, every torchvision module fastconv has a fused counterpart for.

    Recognised: MobileNetV2's ``InvertedResidual`` and ``Conv2dNormActivation``; InceptionV3's
    ``BasicConv2d``, ``InceptionA`` .. ``InceptionE`` and ``InceptionAux``; the depthwise-separable
    prediction blocks (plain ``nn.Sequential``) of SSDLite's classification and regression heads, which
    become ``SSDLitePredictionBlock`` (see ``fastconv.nn``). Each recognised module object stays where it is
    and becomes an instance of the fastconv subclass of its class, so it keeps the very same parameter and
    buffer tensors, hooks and attributes: ``state_dict()`` keys and values are unchanged, references held
    elsewhere (an optimizer's parameter list, a parent module) stay valid, and ``model`` itself is converted
    when it is one of these modules. Unknown modules are left alone; converting twice changes nothing.

    Training mode then computes what torchvision computes; eval mode runs fastconv's fused ops on
    BatchNorm-folded weights.

    Args:
        model: any ``nn.Module``, e.g. ``torchvision.models.mobilenet_v2()`` or
            ``torchvision.models.detection.ssdlite320_mobilenet_v3_large()``.

    Returns:
        ``model``, converted.
    """
    for module in model.modules():
        replacement = REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
        elif type(module) in PREDICTION_HEADS:
            for block in module.module_list:
                if is_prediction_block(block):
                    block.__class__ = fnn.SSDLitePredictionBlock
    return model


class _CallableModule(types.ModuleType):
    """Lets ``fastconv.convert(model)`` work once this submodule is imported.

    Importing ``fastconv.convert`` (``fastconv.models`` does) makes the package attribute ``convert`` this
    module rather than the function it names, so the module forwards calls to the function.
    """

    def __call__(self, model: ModuleT) -> ModuleT:
        return convert(model)


sys.modules[__name__].__class__ = _CallableModule
