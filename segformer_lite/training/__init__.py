"""Scaffolding that trains and scores a SegFormer, not SegFormer itself.

data: the seeded synthetic segmentation set (two tasks); baselines: the per-pixel MLP and
the local CNN it is measured against; train: the training command (one process or DDP);
distributed: BatchNorm synchronised over the DDP ranks on the CPU; evaluate: per-class IoU and mIoU.
"""
