#!/usr/bin/env python
"""DFAD on mnist: `python classification/dfad_mnist.py --ckpt TEACHER.pt [original DFAD_mnist.py flags]`."""
from kdvision.classification.dfad import main

if __name__ == "__main__":
    main("mnist")
