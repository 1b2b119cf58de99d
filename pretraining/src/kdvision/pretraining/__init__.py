"""kdvision pre-training: KDEP feature distillation."""

__version__ = "0.1.0"
