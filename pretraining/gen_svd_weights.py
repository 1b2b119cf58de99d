#!/usr/bin/env python
"""KDEP's SVD basis of the teacher's features: `python pretraining/gen_svd_weights.py imgnet_128k ex_gen_svd 0`."""
from kdvision.pretraining.kdep import main

if __name__ == "__main__":
    main("gen_svd_weights")
