"""Scaffolding that trains and scores a SegFormer, not SegFormer itself.

data: the seeded synthetic segmentation set; train: the training command (one process or DDP);
evaluate: per-class IoU and mIoU.
"""
