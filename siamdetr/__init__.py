"""siamdetr: a reproduction harness for Siamese DETR (CVPR 2023)."""

__version__ = "0.1.0"
