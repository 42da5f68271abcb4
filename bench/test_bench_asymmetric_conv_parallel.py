"""Benchmarks of fastconv.asymmetric_conv_parallel on InceptionE's parallel 1x3 || 3x1 pairs.

conftest.py parametrizes the test over every layer case of OP in `fastconv.shapes`, both batch sizes and every
variant (fastconv backends and PyTorch eager in NCHW and channels_last), one benchmark group per case.
"""

OP = "asymmetric_conv_parallel"


def test_asymmetric_conv_parallel(bench_op, case, batch, variant):
    bench_op(case, batch, variant)
