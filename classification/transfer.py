#!/usr/bin/env python
"""KDEP transfer: `python classification/transfer.py --init runs/kdep/student.pt --datasets cifar100,dtd,caltech256,cub200 --seeds 0,1`."""
from kdvision.classification.transfer import main

if __name__ == "__main__":
    main()
