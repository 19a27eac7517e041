"""Scaffolding that trains and scores a SegFormer, not SegFormer itself; it may use the model,
never ``course/``.

data: the seeded synthetic segmentation set (two tasks); baselines: the per-pixel MLP and
the local CNN it is measured against; model_files: any trained model's file, with its task;
train: the training command (one process or DDP); distributed: BatchNorm synchronised over the
DDP ranks on the CPU; evaluate: per-class IoU and mIoU; ablations: SegFormer with one part
swapped or removed; experiments: the paper's claims tested on the context task
(results/experiments.json is the committed report), with experiment_plan (the designs, claims,
comparisons and verdict rules), stats (paired intervals, verdicts, tables) and erf (effective
receptive field).
"""
