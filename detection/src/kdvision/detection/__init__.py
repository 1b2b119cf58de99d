"""kdvision detection: KDEP transfer and Detectron2 export."""

__version__ = "0.1.0"
