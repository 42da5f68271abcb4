"""pointwise_conv2d: every 1x1 layer of both networks and InceptionV3's merged 1x1 GEMMs, edge shapes, layouts,
autograd, compilers, bad input."""

import torch
from op_testing import BadInput, OpSuite, check_op, common_bad_inputs, edge, replace

OP = "pointwise_conv2d"
EDGES = [
    edge(OP, "odd", (3, 5, 7, 9), ((17, 5, 1, 1),), activation="relu6"),
    edge(OP, "residual-odd", (2, 17, 9, 11), ((24, 17, 1, 1),), residual=True, activation="relu"),
    edge(OP, "1-pixel", (1, 3, 1, 1), ((24, 3, 1, 1),), residual=True),
    edge(OP, "to-5", (2, 96, 11, 13), ((5, 96, 1, 1),), residual=True, activation="relu"),
    edge(OP, "from-17", (1, 17, 4, 3), ((96, 17, 1, 1),), residual=True, activation="relu6"),
    edge(OP, "to-1", (1, 24, 5, 5), ((1, 24, 1, 1),)),
    edge(OP, "deep", (1, 2048, 3, 2), ((40, 2048, 1, 1),), activation="relu"),
]


class TestPointwiseConv2d(OpSuite):
    OP = OP
    EDGES = EDGES
    SMALL = EDGES[1].values  # x [2, 17, 9, 11] -> 24 channels, with a residual
    BAD_INPUTS = (
        *common_bad_inputs(weight=(1, "weight"), bias=(2, "bias"), activation=3),
        BadInput("kernel-3x3", replace(1, lambda w: w.expand(-1, -1, 3, 3)), ValueError,
                 r"weight must have shape \[\*, 17, 1, 1\]; got \[24, 17, 3, 3\]"),
        BadInput("channel-mismatch", replace(1, lambda w: w[:, 1:]), ValueError,
                 r"weight must have shape \[\*, 17, 1, 1\]; got \[24, 16, 1, 1\]"),
        BadInput("residual-shape", replace(4, lambda r: r[:, 1:]), ValueError,
                 r"residual must have shape \[2, 24, 9, 11\]; got \[2, 23, 9, 11\]"),
        BadInput("residual-stride-2-shape", replace(4, lambda r: r[:, :, ::2, ::2]), ValueError,
                 r"residual must have shape \[2, 24, 9, 11\]"),
        BadInput("residual-dtype", replace(4, lambda r: r.bfloat16()), ValueError,
                 r"residual must have the dtype of x"),
        BadInput("residual-device", replace(4, lambda r: r.to("meta")), ValueError,
                 r"residual must be on the device of x"),
    )

    def test_residual_before_activation(self, backend):
        """The residual is added before the activation: relu(conv + residual), not relu(conv) + residual."""
        x, weight = torch.ones(1, 2, 3, 3), torch.ones(4, 2, 1, 1)  # conv(x) == 2 everywhere
        residual = torch.full((1, 4, 3, 3), -5.0)
        out = check_op(OP, (x, weight, None, "relu", residual), backend)
        assert torch.equal(out, torch.zeros(1, 4, 3, 3))
