#!/usr/bin/env python
"""DFAD on cifar: `python classification/dfad_cifar.py --ckpt TEACHER.pt [original DFAD_cifar.py flags]`."""
from kdvision.classification.dfad import main

if __name__ == "__main__":
    main("cifar")
