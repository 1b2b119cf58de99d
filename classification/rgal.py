#!/usr/bin/env python
"""RGAL (relation-guided adversarial learning): `python classification/rgal.py [RGAL main.py flags]`."""
from kdvision.classification.datafree import main_rgal

if __name__ == "__main__":
    main_rgal()
