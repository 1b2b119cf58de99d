#!/usr/bin/env python
"""KDEP segmentation transfer: PSPNet with the encoder initialised from --init (reference/kdep.md §6.2)."""
from kdvision.segmentation.transfer import main

if __name__ == "__main__":
    main()
