"""Benchmarks of fastconv.pointwise_conv2d on every 1x1 conv of MobileNetV2 and InceptionV3.

The InceptionV3 cases include the merged GEMM of the 1x1 convs that read one block input.

conftest.py parametrizes the test over every layer case of OP in `fastconv.shapes`, both batch sizes and every
variant (fastconv backends and PyTorch eager in NCHW and channels_last), one benchmark group per case.
"""

OP = "pointwise_conv2d"


def test_pointwise_conv2d(bench_op, case, batch, variant):
    bench_op(case, batch, variant)
