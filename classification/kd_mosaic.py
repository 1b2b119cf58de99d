#!/usr/bin/env python
"""MosaicKD (distillation from out-of-domain data): `python classification/kd_mosaic.py [kd_mosaic.py flags]`."""
from kdvision.classification.mosaickd import main

if __name__ == "__main__":
    main()
