"""hwnas: hardware-aware AutoML for PyTorch (train-free NAS, elastic supernets,
progressive shrinking, hardware cost models and Pareto search)."""

__version__ = "0.1.0"
