"""asymmetric_conv_pair: every 1x7/7x1 pair of InceptionV3, both orders, n = 3/5/7, edge shapes, layouts,
autograd, compilers, bad input."""

from op_testing import BadInput, OpSuite, common_bad_inputs, edge, replace

OP = "asymmetric_conv_pair"
EDGES = [
    edge(OP, "1x7-7x1-odd", (1, 5, 9, 11), ((17, 5, 1, 7), (24, 17, 7, 1))),
    edge(OP, "7x1-1x7", (3, 17, 7, 8), ((3, 17, 7, 1), (5, 3, 1, 7)), activation="relu6"),
    edge(OP, "1x3-3x1", (1, 3, 4, 5), ((5, 3, 1, 3), (7, 5, 3, 1))),
    edge(OP, "5x1-1x5", (2, 24, 6, 3), ((16, 24, 5, 1), (96, 16, 1, 5)), activation="none"),
    edge(OP, "1x3-5x1", (1, 8, 5, 7), ((8, 8, 1, 3), (12, 8, 5, 1)), activation="relu6"),
    edge(OP, "kernel-over-image", (1, 4, 2, 3), ((6, 4, 1, 7), (5, 6, 7, 1))),
    edge(OP, "1-pixel", (2, 17, 1, 1), ((9, 17, 7, 1), (3, 9, 1, 7))),
]


class TestAsymmetricConvPair(OpSuite):
    OP = OP
    EDGES = EDGES
    SMALL = EDGES[0].values  # x [1, 5, 9, 11], 1x7 -> 17 -> 7x1 -> 24
    BAD_INPUTS = (
        *common_bad_inputs(weight=(1, "weight1"), bias=(2, "bias1"), activation=5),
        BadInput("weight1-3x3", replace(1, lambda w: w.new_ones(17, 5, 3, 3)), ValueError,
                 r"weight1 must be a 1xn or nx1 kernel with n odd; got 3x3"),
        BadInput("weight1-even", replace(1, lambda w: w[..., 1:]), ValueError,
                 r"weight1 must be a 1xn or nx1 kernel with n odd; got 1x6"),
        BadInput("weight1-channel-mismatch", replace(1, lambda w: w[:, 1:]), ValueError,
                 r"weight1 must have shape \[\*, 5, \*, \*\]; got \[17, 4, 1, 7\]"),
        BadInput("weight2-same-orientation", replace(3, lambda w: w.transpose(2, 3)), ValueError,
                 r"weight2 must be an nx1 kernel here; got 1x7"),
        BadInput("weight2-channel-mismatch", replace(3, lambda w: w[:, 1:]), ValueError,
                 r"weight2 must have shape \[\*, 17, \*, \*\]; got \[24, 16, 7, 1\]"),
        BadInput("weight2-device", replace(3, lambda w: w.to("meta")), ValueError,
                 r"weight2 must be on the device of x"),
        BadInput("bias2-shape", replace(4, lambda b: b[1:]), ValueError, r"bias2 must have shape \[24\]; got \[23\]"),
    )
