"""kdvision classification: DFAD, the data-free engine and RGAL, MosaicKD, SDD/DKD/NKD/KD."""

__version__ = "0.1.0"
