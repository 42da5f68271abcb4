"""InceptionV3 on fastconv's fused blocks."""

from __future__ import annotations

from typing import Any

from torchvision.models import Inception3

from fastconv.convert import convert
from fastconv.models._weights import reject_weights
from fastconv.nn import (
    BasicConv2d,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

__all__ = ["inception_v3"]


def inception_v3(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> Inception3:
    """torchvision's InceptionV3 with fastconv's ``BasicConv2d`` and ``InceptionA`` .. ``InceptionAux`` blocks.

    The network is torchvision's ``Inception3`` built with ``inception_blocks=[fastconv.nn.BasicConv2d,
    fastconv.nn.InceptionA, ..., fastconv.nn.InceptionAux]``, then converted with ``fastconv.convert``
    (which reaches the blocks' own ``BasicConv2d`` children). ``state_dict()`` keys equal torchvision's, so
    torchvision checkpoints load with ``strict=True``; torchvision builds its pretrained model with
    ``transform_input=True``, pass it too when loading that checkpoint. Eval mode returns a plain Tensor
    of logits, training mode ``InceptionOutputs(logits, aux_logits)`` when ``aux_logits``, as torchvision.

    Memory format: the input may be NCHW or channels_last. In eval mode the first conv converts it to
    channels_last and every block after it keeps activations channels_last; nothing is converted in
    training mode.

    Args:
        weights: must be None: no weights are downloaded (load a state_dict instead).
        progress: accepted for compatibility with torchvision; nothing is downloaded.
        **kwargs: torchvision's ``Inception3`` arguments: ``num_classes``, ``aux_logits``,
            ``transform_input``, ``inception_blocks``, ``init_weights``, ``dropout``.

    Returns:
        a ``torchvision.models.Inception3`` whose blocks are fastconv modules.

    Raises:
        ValueError: ``weights`` (or ``pretrained=True``) was given.
    """
    reject_weights("inception_v3", weights, kwargs)
    kwargs.setdefault(
        "inception_blocks",
        [BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionAux],
    )
    return convert(Inception3(**kwargs))
