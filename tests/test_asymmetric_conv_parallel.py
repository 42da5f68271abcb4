"""asymmetric_conv_parallel: InceptionE's 1x3 || 3x1, other n and orders, edge shapes, layouts, autograd,
compilers, bad input."""

from op_testing import BadInput, OpSuite, common_bad_inputs, edge, replace

OP = "asymmetric_conv_parallel"
EDGES = [
    edge(OP, "1x3-3x1-odd", (3, 5, 7, 9), ((17, 5, 1, 3), (3, 5, 3, 1))),
    edge(OP, "1x5-5x1", (1, 24, 6, 5), ((8, 24, 1, 5), (16, 24, 5, 1)), activation="relu6"),
    edge(OP, "1x7-7x1", (1, 3, 9, 4), ((5, 3, 1, 7), (5, 3, 7, 1)), activation="none"),
    edge(OP, "3x1-1x3", (2, 17, 5, 8), ((6, 17, 3, 1), (10, 17, 1, 3))),
    edge(OP, "1x3-5x1", (1, 96, 3, 5), ((24, 96, 1, 3), (40, 96, 5, 1)), activation="relu6"),
    edge(OP, "1-pixel", (2, 9, 1, 1), ((3, 9, 1, 3), (7, 9, 3, 1))),
]


class TestAsymmetricConvParallel(OpSuite):
    OP = OP
    EDGES = EDGES
    SMALL = EDGES[3].values  # x [2, 17, 5, 8], 3x1 -> 6 || 1x3 -> 10
    BAD_INPUTS = (
        *common_bad_inputs(weight=(1, "weight_a"), bias=(2, "bias_a"), activation=5),
        BadInput("weight_a-3x3", replace(1, lambda w: w.new_ones(6, 17, 3, 3)), ValueError,
                 r"weight_a must be a 1xn or nx1 kernel with n odd; got 3x3"),
        BadInput("weight_b-even", replace(3, lambda w: w.new_ones(10, 17, 1, 2)), ValueError,
                 r"weight_b must be a 1xn or nx1 kernel with n odd; got 1x2"),
        BadInput("weight_b-channel-mismatch", replace(3, lambda w: w[:, 1:]), ValueError,
                 r"weight_b must have shape \[\*, 17, \*, \*\]; got \[10, 16, 1, 3\]"),
        BadInput("weight_b-dtype", replace(3, lambda w: w.half()), ValueError, r"weight_b must have the dtype of x"),
        BadInput("bias_b-shape", replace(4, lambda b: b[1:]), ValueError, r"bias_b must have shape \[10\]; got \[9\]"),
    )
