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
    checkpoint   this package's own weight files; safe file writing and reading
    convert      transformers and official NVlabs checkpoints in, official names out

Scaffolding, in sub-packages that use the model (the model never imports them):

    training/    what trains it: synthetic data, local baselines, the training loop, DDP BatchNorm,
                 evaluation, the ablations and experiments that test the paper's claims
    course/      what teaches it: exercise checkers, homework, widgets, plots, photos, cost, trace

Their names are imported from there (``from segformer_lite.course.cost import attention_cost``).
The commands are ``segformer-lite train | evaluate | experiments | homework | export`` (or ``python -m segformer_lite ...``).
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
from .checkpoint import load_segformer, save_segformer
from .convert import UnusedWeightsWarning, from_transformers, load_pretrained, to_official_state_dict

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
    "load_segformer", "save_segformer",
    "from_transformers", "load_pretrained", "to_official_state_dict", "UnusedWeightsWarning",
]

__version__ = "0.1.0"
