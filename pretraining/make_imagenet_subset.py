#!/usr/bin/env python
"""Seeded per-class ImageNet subset as a file list: `python pretraining/make_imagenet_subset.py SRC DST --per-class 128 --seed 0`."""
from kdvision.pretraining.subset import main

if __name__ == "__main__":
    main()
