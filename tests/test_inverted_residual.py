"""inverted_residual: every block of MobileNetV2, edge shapes (t = 1, 5x5, stride 2 on odd sizes), layouts,
autograd, compilers, bad input."""

from op_testing import BadInput, OpSuite, check_op, common_bad_inputs, edge, replace

OP = "inverted_residual"


def _weights(cin: int, hidden: int | None, cout: int, k: int = 3) -> tuple:
    """(expand, depthwise, project) weight shapes; hidden None for expansion factor 1."""
    expand = None if hidden is None else (hidden, cin, 1, 1)
    hidden = cin if hidden is None else hidden
    return expand, (hidden, 1, k, k), (cout, hidden, 1, 1)


def _drop_output_channel(args: list) -> None:
    args[5], args[6] = args[5][1:], args[6][1:]  # project weight and bias: Cout = Cin - 1


EDGES = [
    edge(OP, "t1", (1, 5, 9, 7), _weights(5, None, 3), padding=1, activation="relu6"),
    edge(OP, "t1-residual", (2, 17, 7, 9), _weights(17, None, 17), padding=1, residual=True, activation="relu6"),
    edge(OP, "t1-s2-odd", (1, 24, 9, 9), _weights(24, None, 32), stride=2, padding=1, activation="relu6"),
    edge(OP, "s2-odd", (1, 3, 9, 11), _weights(3, 18, 5), stride=2, padding=1, activation="relu6"),
    edge(OP, "residual", (3, 24, 7, 7), _weights(24, 144, 24), padding=1, residual=True, activation="relu6"),
    edge(OP, "k5-s2-odd", (1, 16, 9, 9), _weights(16, 96, 24, k=5), stride=2, padding=2, activation="relu6"),
    edge(OP, "k5-residual", (1, 5, 5, 6), _weights(5, 30, 5, k=5), padding=2, residual=True, activation="relu6"),
    edge(OP, "relu", (1, 8, 6, 5), _weights(8, 40, 12), padding=1, activation="relu"),
    edge(OP, "none", (2, 8, 5, 4), _weights(8, 20, 8), padding=1, residual=True),
    edge(OP, "1-pixel-s2", (1, 96, 1, 1), _weights(96, 576, 160), stride=2, padding=1, activation="relu6"),
]


class TestInvertedResidual(OpSuite):
    OP = OP
    EDGES = EDGES
    SMALL = edge(OP, "small", (2, 8, 7, 9), _weights(8, 48, 8), padding=1, residual=True, activation="relu6").values
    BAD_INPUTS = (
        *common_bad_inputs(weight=(1, "expand_weight"), bias=(2, "expand_bias"), activation=9),
        BadInput("expand-bias-without-weight", replace(1, lambda w: None), ValueError,
                 r"expand_bias must be None when expand_weight is None"),
        BadInput("expand-channel-mismatch", replace(1, lambda w: w[:, 1:]), ValueError,
                 r"expand_weight must have shape \[\*, 8, 1, 1\]; got \[48, 7, 1, 1\]"),
        BadInput("dw-7x7", replace(3, lambda w: w.new_ones(48, 1, 7, 7)), ValueError,
                 r"dw_weight must be a 3x3 or 5x5 depthwise kernel; got 7x7"),
        BadInput("dw-3x5", replace(3, lambda w: w.new_ones(48, 1, 3, 5)), ValueError,
                 r"dw_weight must be a 3x3 or 5x5 depthwise kernel; got 3x5"),
        BadInput("dw-channel-mismatch", replace(3, lambda w: w[1:]), ValueError,
                 r"dw_weight must have shape \[48, 1, \*, \*\]"),
        BadInput("dw-bias-shape", replace(4, lambda b: b[1:]), ValueError, r"dw_bias must have shape \[48\]"),
        BadInput("project-channel-mismatch", replace(5, lambda w: w[:, 1:]), ValueError,
                 r"project_weight must have shape \[\*, 48, 1, 1\]"),
        BadInput("project-dtype", replace(5, lambda w: w.bfloat16()), ValueError,
                 r"project_weight must have the dtype of x"),
        BadInput("project-bias-shape", replace(6, lambda b: b[1:]), ValueError, r"project_bias must have shape \[8\]"),
        BadInput("stride-3", replace(7, lambda s: 3), ValueError, r"stride must be 1 or 2; got 3"),
        BadInput("residual-stride-2", replace(7, lambda s: 2), ValueError,
                 r"residual=True needs stride 1 .*; got stride 2, 8 -> 8 channels"),
        BadInput("residual-channels", _drop_output_channel, ValueError,
                 r"residual=True needs stride 1 and as many output as input channels; got stride 1, 8 -> 7"),
    )

    def test_t1_without_expand_bias(self, backend):
        """t = 1 blocks pass None for both expand arguments; the depthwise then reads x's channels."""
        case, batch = EDGES[0].values
        args = case.make_args(batch)
        assert args[1] is None and args[2] is None
        check_op(OP, args, backend)
