#!/usr/bin/env python
"""Teacher training with DFAD's train_teacher.py flags and recipe (``--recipe mosaickd`` for MosaicKD's)."""
from kdvision.classification.teacher import main

if __name__ == "__main__":
    main("dfad")
