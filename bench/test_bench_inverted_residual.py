"""Benchmarks of fastconv.inverted_residual on every InvertedResidual block of MobileNetV2.

conftest.py parametrizes the test over every layer case of OP in `fastconv.shapes`, both batch sizes and every
variant (fastconv backends and PyTorch eager in NCHW and channels_last), one benchmark group per case.
"""

OP = "inverted_residual"


def test_inverted_residual(bench_op, case, batch, variant):
    bench_op(case, batch, variant)
