"""depthwise_conv2d: every layer shape of MobileNetV2, edge shapes, layouts, autograd, compilers, bad input."""

import torch
from op_testing import BadInput, OpSuite, check_op, common_bad_inputs, edge, replace

OP = "depthwise_conv2d"
EDGES = [
    edge(OP, "odd", (3, 5, 7, 9), ((5, 1, 3, 3),), padding=1, activation="relu"),
    edge(OP, "s2-odd", (2, 17, 9, 11), ((17, 1, 3, 3),), stride=2, padding=1, activation="relu6"),
    edge(OP, "k5", (2, 24, 8, 8), ((24, 1, 5, 5),), padding=2),
    edge(OP, "k5-s2-odd", (1, 3, 13, 11), ((3, 1, 5, 5),), stride=2, padding=2, activation="relu6"),
    edge(OP, "dil2", (1, 16, 10, 9), ((16, 1, 3, 3),), padding=2, dilation=2, activation="relu"),
    edge(OP, "k5-dil2-s2", (1, 40, 15, 13), ((40, 1, 5, 5),), stride=2, padding=4, dilation=2, activation="relu6"),
    edge(OP, "s2-no-pad", (1, 96, 6, 7), ((96, 1, 3, 3),), stride=2),
    edge(OP, "out-1x1", (3, 33, 3, 3), ((33, 1, 3, 3),)),
]


class TestDepthwiseConv2d(OpSuite):
    OP = OP
    EDGES = EDGES
    SMALL = EDGES[1].values  # x [2, 17, 9, 11], stride 2
    BAD_INPUTS = (
        *common_bad_inputs(weight=(1, "weight"), bias=(2, "bias"), activation=6),
        BadInput("channel-mismatch", replace(1, lambda w: w[1:]), ValueError,
                 r"weight must have shape \[17, 1, \*, \*\]; got \[16, 1, 3, 3\]"),
        BadInput("weight-not-depthwise", replace(1, lambda w: w.expand(-1, 2, -1, -1)), ValueError,
                 r"weight must have shape \[17, 1, \*, \*\]"),
        BadInput("stride-0", replace(3, lambda s: (0, 1)), ValueError,
                 r"stride must be two integers >= 1; got \[0, 1\]"),
        BadInput("stride-str", replace(3, lambda s: "2"), TypeError, r"stride must be an int or a pair of ints"),
        BadInput("stride-3-values", replace(3, lambda s: (1, 1, 1)), ValueError, r"stride must be two integers"),
        BadInput("padding-negative", replace(4, lambda p: -1), ValueError, r"padding must be two integers >= 0"),
        BadInput("dilation-0", replace(5, lambda d: 0), ValueError, r"dilation must be two integers >= 1"),
        BadInput("kernel-larger-than-input", replace(1, lambda w: w.new_ones(17, 1, 13, 13)), ValueError,
                 r"x of spatial size 9x11 is smaller than the 13x13 kernel"),
    )

    def test_rectangular(self, backend):
        """Different strides, paddings, dilations and kernel sizes along H and W."""
        x = torch.randn(2, 6, 11, 10)
        weight, bias = torch.randn(6, 1, 3, 5) / 4, torch.randn(6)
        check_op(OP, (x, weight, bias, (2, 1), (1, 3), (1, 2), "relu6"), backend)
