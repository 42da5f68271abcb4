"""Benchmarks of whole networks: fastconv's MobileNetV2 and InceptionV3 against torchvision's.

conftest.py parametrizes the test over both networks, the batch sizes (batch 1 only with --bench-quick) and
every variant: fastconv's model on each backend that runs here, torchvision's eager model in NCHW and in
channels_last, all with the same random weights and BatchNorm statistics, in eval mode under no_grad.
"""


def test_network(bench_network, network, batch, variant):
    bench_network(network, batch, variant)
