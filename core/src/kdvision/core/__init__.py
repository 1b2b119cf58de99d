"""Core of kdvision: model zoo, generators, losses, hooks, data, training engine, checkpoints, distributed."""

__version__ = "0.1.0"
