"""The ``weights`` / ``pretrained`` arguments of torchvision's builders, which fastconv does not download."""

from __future__ import annotations

from typing import Any


def reject_weights(builder: str, weights: Any, kwargs: dict[str, Any]) -> None:
    """Raises when pretrained weights are asked for; drops a false ``pretrained`` from ``kwargs``."""
    pretrained = kwargs.pop("pretrained", False)
    if weights is None and not pretrained:
        return
    asked = f"weights={weights!r}" if weights is not None else f"pretrained={pretrained!r}"
    raise ValueError(
        f"fastconv.models.{builder} downloads no weights; got {asked}. Build the model with weights=None and "
        f"load a state_dict, whose keys are torchvision's: "
        f"model.load_state_dict(torchvision.models.{builder}(weights=...).state_dict())"
    )
