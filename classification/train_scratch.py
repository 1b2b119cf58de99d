#!/usr/bin/env python
"""MosaicKD's train_scratch.py: the same teacher training with the ``mosaickd`` recipe (cosine, wd 1e-4, 200 ep)."""
from kdvision.classification.teacher import main

if __name__ == "__main__":
    main("mosaickd")
