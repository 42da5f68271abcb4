"""Benchmarks of fastconv.asymmetric_conv_pair on InceptionV3's sequential 1x7/7x1 pairs.

conftest.py parametrizes the test over every layer case of OP in `fastconv.shapes`, both batch sizes and every
variant (fastconv backends and PyTorch eager in NCHW and channels_last), one benchmark group per case.
"""

OP = "asymmetric_conv_pair"


def test_asymmetric_conv_pair(bench_op, case, batch, variant):
    bench_op(case, batch, variant)
