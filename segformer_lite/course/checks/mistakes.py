"""The catalogue of classic mistakes, one per id, that the checkers can name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    title: str  # what the learner did, in a few words; tests look for it in the message
    fix: str  # how to put it right


MISTAKES: dict[str, Mistake] = {m_id: Mistake(*text) for m_id, text in {
    # overlapping patch embedding
    "no_padding": ("the patch-embedding convolution has no padding, so the token grid is too small",
                   "pad by patch_size // 2 (Conv2d(..., padding=patch_size // 2)): SegFormer's grid is "
                   "ceil(H / stride) x ceil(W / stride)"),
    "embed_no_norm": ("the LayerNorm after the patch-embedding convolution is missing",
                      "return self.norm(tokens), not the raw tokens"),
    "flatten_no_permute": ("the feature map was reshaped to tokens without moving channels last",
                           "x.reshape(B, H*W, C) mixes channels into tokens; use "
                           "x.flatten(2).transpose(1, 2) or rearrange(x, 'b c h w -> b (h w) c')"),
    "column_major": ("the tokens are in column-major order (w before h)",
                     "flatten rows first: token n is pixel (n // W, n % W); use 'b c h w -> b (h w) c'"),
    "hw_swapped": ("H and W are swapped",
                   "keep the grid as (H, W) = (rows, columns), e.g. h, w = x.shape[-2:]"),
    # tokens -> image
    "unflatten_no_permute": ("the tokens were reshaped to an image without moving channels first",
                             "tokens.reshape(B, C, H, W) scrambles channels and pixels; use "
                             "tokens.transpose(1, 2).reshape(B, C, H, W) or "
                             "rearrange(t, 'b (h w) c -> b c h w', h=H, w=W)"),
    "grid_not_checked": ("a grid that does not fit the tokens is not refused with ValueError",
                         "check first: if N != H * W, raise ValueError(...); a reshape to the wrong "
                         "grid either fails with an unrelated error or, with -1, silently succeeds"),
    "sqrt_hw": ("H and W are computed as sqrt(N), which is only right for square grids",
                "use the (H, W) that travels with the tokens (the hw argument), never sqrt(N)"),
    # efficient self-attention
    "heads_over_tokens": ("the heads are split over tokens instead of channels",
                          "reshape (B, N, C) to (B, N, heads, C // heads) and then permute to "
                          "(B, heads, N, d), e.g. rearrange(q, 'b n (h d) -> b h n d'); a plain "
                          "reshape to (B, heads, N, d) hands each head a block of tokens"),
    "merge_no_permute": ("the heads are merged back without moving the head axis next to d",
                         "(B, heads, N, d) -> (B, N, heads*d) needs a transpose(1, 2) before the "
                         "reshape, e.g. rearrange(out, 'b h n d -> b n (h d)')"),
    "no_scale": ("the attention scores are not scaled by head_dim ** -0.5",
                 "multiply q @ k^T by self.scale = (dim // num_heads) ** -0.5 before the softmax"),
    "scale_dim": ("the scores are scaled by dim ** -0.5 instead of head_dim ** -0.5",
                  "each head's dot product has head_dim = dim // num_heads terms: scale by "
                  "(dim // num_heads) ** -0.5"),
    "softmax_axis": ("the softmax runs over the wrong axis (queries instead of keys)",
                     "normalise over the keys, the last axis: scores.softmax(dim=-1)"),
    "conv_channels_last": ("the sequence-reduction Conv2d got a channels-last tensor "
                           "(reshape without permute)",
                           "Conv2d wants (B, C, H, W): use x.transpose(1, 2).reshape(B, C, H, W) "
                           "(or tokens_to_image(x, hw)) before self.sr and flatten back with "
                           ".flatten(2).transpose(1, 2)"),
    "sr_no_norm": ("the LayerNorm after the sequence-reduction conv is missing",
                   "apply self.norm to the reduced tokens before self.kv"),
    "no_reduction": ("keys and values come from all N tokens: the sequence reduction is skipped",
                     "when sr_ratio > 1 compute kv from self.norm(self.sr(image)) tokens"),
    "kv_swapped": ("K and V are swapped when splitting the fused kv projection",
                   "the first dim outputs of self.kv are K, the last dim are V"),
    "sr_kernel_stride": ("the sequence-reduction conv's kernel or stride is not sr_ratio",
                         "self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio): each "
                         "key summarises one sr x sr patch, with no overlap and no gap"),
    "no_proj": ("the output projection self.proj is not applied",
                "end with self.proj(out) after merging the heads"),
    # Mix-FFN
    "dwconv_no_groups": ("the depthwise convolution is a full convolution (groups missing)",
                         "use nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden): one 3x3 "
                         "filter per channel"),
    "gelu_before_dwconv": ("GELU is applied before the depthwise conv instead of after it",
                           "the order is fc1 -> dwconv -> GELU -> fc2"),
    "gelu_after_fc2": ("GELU is applied after fc2 instead of after the depthwise conv",
                       "the order is fc1 -> dwconv -> GELU -> fc2"),
    "no_gelu": ("the GELU activation is missing",
                "apply F.gelu (exact, not tanh) between the depthwise conv and fc2"),
    "relu": ("ReLU is used instead of GELU", "use F.gelu (exact erf form, torch's default)"),
    "gelu_tanh": ("GELU uses the tanh approximation",
                  "SegFormer uses the exact GELU: F.gelu(x) without approximate='tanh'"),
    "no_dwconv": ("the depthwise convolution is skipped",
                  "reshape the fc1 output to (B, hidden, H, W), apply self.dwconv, flatten back"),
    "ffn_residual": ("Mix-FFN adds its own residual",
                     "return fc2(...) only; the residual connection belongs to the Block"),
    # Block
    "post_norm": ("the block is post-norm (LayerNorm after the residual add)",
                  "MiT is pre-norm: x = x + attn(norm1(x)), then x = x + ffn(norm2(x))"),
    "no_attn_residual": ("the attention branch has no residual connection",
                         "add the input back: x = x + drop_path(attn(norm1(x), hw))"),
    "no_ffn_residual": ("the Mix-FFN branch has no residual connection",
                        "add the input back: x = x + drop_path(ffn(norm2(x), hw))"),
    "norm1_twice": ("norm1 is used for both branches (norm2 is never used)",
                    "the Mix-FFN branch has its own LayerNorm: ffn(norm2(x), hw)"),
    "parallel_branches": ("Mix-FFN reads the block's input instead of the attention branch's result",
                          "update x after attention, then feed that x to norm2 and the FFN"),
    "no_drop_path": ("DropPath is not applied to the residual branches",
                     "wrap both branches: x = x + self.drop_path(...)"),
    # any exercise
    "inplace_input": ("forward changes its input tensor in place (x += ... or an in-place op on a view of x)",
                      "write x = x + ...: an in-place update overwrites the caller's tensor, which the "
                      "caller may still need (here, to compute the reference)"),
    "batch_hard_coded": ("the batch size is hard-coded to 1: right for one image, wrong for a batch",
                         "read the batch size from the input (B = x.shape[0]) or let reshape infer it "
                         "with -1; never write 1 for it"),
    # Stage and encoder
    "stage_no_norm": ("the stage's final LayerNorm is missing",
                      "apply self.norm to the tokens after the last block"),
    "stage_returns_tokens": ("the stage returns tokens instead of a feature map",
                             "turn the tokens back into (B, C, H, W) with tokens_to_image(x, hw)"),
    "encoder_last_only": ("the encoder returns only the last feature map",
                          "collect every stage's output in a list and return all of them"),
    "encoder_not_chained": ("each stage is fed the input images instead of the previous "
                            "stage's feature map",
                            "keep x = the feature map you just appended: stage i+1's patch embedding "
                            "reads stage i's output, not the images"),
    "encoder_chains_tokens": ("the next stage is fed tokens (B, N, C) instead of the feature map",
                              "stage i+1's patch embedding is a Conv2d: feed it "
                              "x = tokens_to_image(stage.norm(x), hw), the map you also collect"),
    # all-MLP decoder
    "decoder_concat_order": ("the maps are concatenated shallowest stage first ([c1, c2, c3, c4])",
                             "concatenate deepest first, torch.cat([c4, c3, c2, c1], dim=1), as the "
                             "released code does: the fuse conv's first D input channels read stage 4"),
    "decoder_full_size": ("the maps are upsampled to the image size (4x stage 1's grid) instead of "
                          "to stage 1's grid",
                          "upsample every map to size=feats[0].shape[-2:], 1/4 of the image: the "
                          "head's logits stay at stride 4"),
    "decoder_scale_factor": ("the maps are upsampled by a fixed factor (2, 4, 8) instead of to stage 1's "
                             "size, which breaks when a side is not a multiple of 32",
                             "pass size=feats[0].shape[-2:] to F.interpolate, not scale_factor: the "
                             "grids round up (a 40-pixel side gives 10, 5, 3, 2 and 3 * 4 = 12, not 10)"),
    "decoder_align_corners": ("the maps are upsampled with align_corners=True",
                              "use F.interpolate(x, size=..., mode='bilinear', align_corners=False), "
                              "as the released code does"),
    "decoder_no_norm": ("the BatchNorm after the fuse conv is missing",
                        "apply self.norm between the fuse conv and the ReLU: relu(norm(fuse(x)))"),
    "decoder_no_relu": ("the ReLU after the fuse conv's BatchNorm is missing",
                        "fuse, normalise, then torch.relu: relu(norm(fuse(x)))"),
    "decoder_linear_axis": ("the per-stage Linear is applied along an axis that is not the channels "
                            "(a reshape without permute)",
                            "nn.Linear acts on the last axis: move channels last, "
                            "rearrange(f, 'b c h w -> b (h w) c'), apply the Linear, and go back with "
                            "rearrange(x, 'b (h w) d -> b d h w', h=h, w=w)"),
}.items()}

# half-made versions of a catalogued mistake (e.g. only one of two reshapes wrong) -> its id
ALIASES = {"heads_over_tokens_split_only": "heads_over_tokens", "heads_over_token_blocks": "heads_over_tokens",
           "conv_channels_last_out": "conv_channels_last", "conv_channels_last_in": "conv_channels_last",
           "unflatten_no_permute_in": "unflatten_no_permute", "decoder_linear_axis_out": "decoder_linear_axis"}
