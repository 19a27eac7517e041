"""segformer_lite: SegFormer (the Mix Transformer encoder MiT-B0 ... B5 and its all-MLP decoder),
built to be read.

SegFormer itself, at the top level, in course order:

    config       MiTConfig, mit_config("b0" ... "b5")
    patch_embed  OverlapPatchEmbed
    grid         grid arithmetic: conv output size, stage grids, key grid, smallest input
    tokens       image <-> tokens, the grid (H, W) carried along
    attention    EfficientSelfAttention (sequence reduction), FullSelfAttention
    mix_ffn      MixFFN
    block        Block, DropPath
    encoder      MixTransformer: four stages
    decoder      the all-MLP head and SegFormer = encoder + head
    checkpoint   weights in and out: transformers, official NVlabs, our own SegFormer files

Scaffolding, in sub-packages:

    course/      what teaches it: exercise checkers, homework, widgets, plots, photos, cost, trace
    training/    what trains it: synthetic data, local baselines, the training loop, DDP BatchNorm, evaluation,
                 the ablations and experiments that test the paper's claims

``train.py``, ``evaluate.py``, ``homework.py`` and ``experiments.py`` at the top are only the entry
points of ``python -m segformer_lite.train`` / ``.evaluate`` / ``.homework`` / ``.experiments``.
"""
from .config import VARIANTS, MiTConfig, mit_config
from .patch_embed import OverlapPatchEmbed
from .grid import conv_output_size, min_input_size, reduced_grid, stage_grid_sizes
from .tokens import image_to_tokens, tokens_to_image
from .attention import EfficientSelfAttention, FullSelfAttention
from .mix_ffn import MixFFN
from .block import Block, DropPath
from .encoder import MixTransformer, Stage
from .decoder import AllMLPDecoder, SegFormer
from .checkpoint import (UnusedWeightsWarning, from_transformers, load_pretrained, load_segformer, save_segformer,
                         to_official_state_dict)
from .course.cost import AttentionCost, EncoderCost, StageCost, attention_cost, encoder_cost, mix_ffn_flops
from .course.trace import ShapeTrace, trace_shapes
from .course.images import PHOTOS, load_photo, photo_tensor
from .training.data import CLASSES, SyntheticShapes, render_shapes

__all__ = [
    "VARIANTS", "MiTConfig", "mit_config",
    "OverlapPatchEmbed",
    "conv_output_size", "min_input_size", "reduced_grid", "stage_grid_sizes",
    "image_to_tokens", "tokens_to_image",
    "EfficientSelfAttention", "FullSelfAttention",
    "MixFFN",
    "Block", "DropPath",
    "MixTransformer", "Stage",
    "AllMLPDecoder", "SegFormer",
    "from_transformers", "load_pretrained", "load_segformer", "save_segformer", "to_official_state_dict",
    "UnusedWeightsWarning",
    "AttentionCost", "EncoderCost", "StageCost", "attention_cost", "encoder_cost", "mix_ffn_flops",
    "ShapeTrace", "trace_shapes",
    "PHOTOS", "load_photo", "photo_tensor",
    "CLASSES", "SyntheticShapes", "render_shapes",
]

__version__ = "0.1.0"
