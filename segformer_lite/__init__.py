"""segformer_lite: the SegFormer encoder (Mix Transformer, MiT-B0 ... B5), built to be read.

Modules follow the course: config -> patch_embed -> tokens -> attention -> mix_ffn -> block ->
encoder, then checkpoint (weights in and out), cost and trace (for the notebooks), and the
decoder, synthetic data and training on top.
"""
from .config import VARIANTS, MiTConfig, mit_config
from .patch_embed import OverlapPatchEmbed, conv_output_size
from .tokens import image_to_tokens, tokens_to_image
from .attention import EfficientSelfAttention, FullSelfAttention
from .mix_ffn import MixFFN
from .block import Block, DropPath
from .encoder import MixTransformer, Stage, min_input_size, stage_grid_sizes
from .checkpoint import from_transformers, load_pretrained, to_official_state_dict
from .cost import AttentionCost, EncoderCost, StageCost, attention_cost, encoder_cost, mix_ffn_flops
from .trace import ShapeTrace, trace_shapes
from .images import PHOTOS, load_photo, photo_tensor
from .decoder import AllMLPDecoder, SegFormer, load_segformer, save_segformer
from .data import CLASSES, SyntheticShapes, render_shapes

__version__ = "0.1.0"
