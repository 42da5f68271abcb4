"""MobileNetV2, InceptionV3 and the SSDLite detector on MobileNetV2, built from torchvision's networks with
fastconv's fused blocks."""

from fastconv.models.inception import inception_v3
from fastconv.models.mobilenetv2 import mobilenet_v2
from fastconv.models.ssdlite import ssdlite_mobilenet_v2

__all__ = ["inception_v3", "mobilenet_v2", "ssdlite_mobilenet_v2"]
