"""kdvision segmentation: DFAD with DeepLabV3 on CamVid and NYUv2, transfer."""

__version__ = "0.1.0"
