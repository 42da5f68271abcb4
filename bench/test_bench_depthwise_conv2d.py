"""Benchmarks of fastconv.depthwise_conv2d on every depthwise layer of MobileNetV2 (3x3, relu6).

conftest.py parametrizes the test over every layer case of OP in `fastconv.shapes`, both batch sizes and every
variant (fastconv backends and PyTorch eager in NCHW and channels_last), one benchmark group per case.
"""

OP = "depthwise_conv2d"


def test_depthwise_conv2d(bench_op, case, batch, variant):
    bench_op(case, batch, variant)
