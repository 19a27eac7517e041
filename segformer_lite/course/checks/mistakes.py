"""The catalogue of classic mistakes, one per id, that the checkers can name."""
from __future__ import annotations

import itertools

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
                   "keep the grid as (H, W) = (rows, columns): read it from the map as h, w = x.shape[-2:] "
                   "where x is (B, C, H, W), and pass on the hw argument that travels with tokens (B, N, C) "
                   "as it came (h, w = hw); a (B, N, C) tensor's last two sizes are N and C, not H and W"),
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
    "no_scale": ("the attention scores are not scaled before the softmax",
                 "multiply q @ k^T by self.scale = (dim // num_heads) ** -0.5 before the softmax"),
    "scale_dim": ("the scores are scaled by dim ** -0.5, the width of the whole token",
                  "each head's dot product has head_dim = dim // num_heads terms: scale by "
                  "(dim // num_heads) ** -0.5"),
    "scale_misplaced": ("the scale is not applied once, as a factor on q @ k^T before the softmax (applied "
                        "twice, inverted, or after the softmax)",
                        "scores = q @ k.transpose(-2, -1) * self.scale, then the softmax, with "
                        "self.scale = (dim // num_heads) ** -0.5"),
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
    "sr_kernel_stride": ("the sequence-reduction conv's kernel or stride is wrong",
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
    "gelu_twice": ("GELU is applied twice (once more after fc1 or after the first GELU)",
                   "apply it once, after the depthwise conv: fc1 -> dwconv -> GELU -> fc2"),
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
    "norm_applied_twice": ("a branch's input goes through its LayerNorm twice in a row (norm(norm(x)))",
                           "call each LayerNorm once, on what its branch reads: "
                           "x = x + drop_path(attn(norm1(x), hw)), then x = x + drop_path(ffn(norm2(x), hw))"),
    "norm_after_residual": ("the residual sum is normalised as well (a LayerNorm after the add, on top of the "
                            "one before the branch)",
                            "normalise only what the branch reads and leave the sum alone: "
                            "x = x + drop_path(attn(norm1(x), hw)), with no norm around it"),
    "ffn_before_attention": ("the two branches run in the other order (Mix-FFN before attention)",
                             "attention first, then Mix-FFN on its result: x = x + drop_path(attn(norm1(x), hw)); "
                             "x = x + drop_path(ffn(norm2(x), hw))"),
    "residual_from_normed": ("the residual is added to the normalised tokens (x = norm(x), then "
                             "x = x + branch(x)) instead of to the block's input",
                             "keep x and normalise only the branch's input: x = x + drop_path(attn(norm1(x), hw)), "
                             "not x = norm1(x); x = x + attn(x, hw)"),
    "norms_swapped": ("norm1 and norm2 are swapped (norm2 in front of attention, norm1 in front of Mix-FFN)",
                      "attn reads norm1(x) and ffn reads norm2(x): x = x + drop_path(attn(norm1(x), hw)); "
                      "x = x + drop_path(ffn(norm2(x), hw))"),
    # any exercise
    "inplace_input": ("forward changes its input tensor in place (x += ... or an in-place op on a view of x)",
                      "write x = x + ...: an in-place update overwrites the caller's tensor, which the "
                      "caller may still need (here, to compute the reference)"),
    "batch_hard_coded": ("the batch size is hard-coded to 1: right for one image, wrong for a batch",
                         "read the batch size from the input (B = x.shape[0]) or let reshape infer it "
                         "with -1; never write 1 for it"),
    "batch_written_as_number": ("a batch size is written as a number: right for the batches of 2 the check "
                                "tried first, wrong for a batch of 3",
                                "read the batch size from the input (B = x.shape[0]) or let reshape infer it "
                                "with -1; never write a number for it"),
    # Stage and encoder
    "stage_no_norm": ("the stage's final LayerNorm is missing",
                      "apply the stage's norm (stage[\"norm\"] in the encoder's loop, self.norm in a Stage) "
                      "to the tokens after the last block"),
    "stage_returns_tokens": ("the stage returns tokens instead of a feature map",
                             "turn the tokens back into (B, C, H, W) with tokens_to_image(x, hw)"),
    "ffn_hidden_width": ("the Mix-FFN's hidden width is not the one the block's arguments give",
                         "build it as sl.MixFFN(dim, int(dim * mlp_ratio)): mlp_ratio times the block's width"),
    "stage_norm_every_block": ("the stage's LayerNorm runs after every block instead of once, after the last",
                               "run the blocks first, then the stage's norm once: for blk in blocks: "
                               "x = blk(x, hw), and after the loop x = norm(x)"),
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
    "decoder_concat_permuted": ("the four maps are concatenated in an order that is neither the released "
                                "one nor its reverse",
                                "concatenate deepest first, torch.cat([c4, c3, c2, c1], dim=1), as the "
                                "released code does: the fuse conv's first D input channels read stage 4"),
    "decoder_interp_mode": ("the maps are upsampled with another interpolation than bilinear (nearest, "
                            "bicubic, ...)",
                            "use F.interpolate(x, size=..., mode='bilinear', align_corners=False), "
                            "as the released code does"),
    "decoder_no_norm": ("the BatchNorm after the fuse conv is missing",
                        "apply self.norm between the fuse conv and the ReLU: relu(norm(fuse(x)))"),
    "decoder_no_relu": ("the ReLU after the fuse conv's BatchNorm is missing",
                        "fuse, normalise, then torch.relu: relu(norm(fuse(x)))"),
    "decoder_relu_before_norm": ("the ReLU comes before the BatchNorm (norm(relu(fuse(x))))",
                                 "normalise first, then the ReLU: x = torch.relu(self.norm(self.fuse(x)))"),
    "decoder_norm_twice": ("the BatchNorm is applied twice (norm(norm(fuse(x))))",
                           "call self.norm once, on fuse's output: x = torch.relu(self.norm(self.fuse(x)))"),
    "decoder_dropout_after_classifier": ("dropout is applied to the logits, after the classifier, instead of to "
                                         "the features the classifier reads",
                                         "dropout goes in front of the classifier: "
                                         "return self.classifier(self.dropout(x))"),
    "decoder_no_norm_no_relu": ("neither BatchNorm nor ReLU follows the fuse conv (Eq. 4 read literally)",
                                "the fuse step is a ConvModule, conv + BatchNorm + ReLU, as released: "
                                "x = torch.relu(self.norm(self.fuse(x)))"),
    "decoder_linear_axis": ("the per-stage Linear is applied along an axis that is not the channels "
                            "(a reshape without permute)",
                            "nn.Linear acts on the last axis: move channels last, "
                            "rearrange(f, 'b c h w -> b (h w) c'), apply the Linear, and go back with "
                            "rearrange(x, 'b (h w) d -> b d h w', h=h, w=w)"),
}.items()}

# half-made versions of a catalogued mistake (e.g. only one of two reshapes wrong) -> its id
ALIASES = {"heads_over_tokens_split_only": "heads_over_tokens", "heads_over_token_blocks": "heads_over_tokens",
           "conv_channels_last_out": "conv_channels_last", "conv_channels_last_in": "conv_channels_last",
           "unflatten_no_permute_in": "unflatten_no_permute", "decoder_linear_axis_out": "decoder_linear_axis",
           "norm_applied_twice_attn": "norm_applied_twice", "norm_applied_twice_ffn": "norm_applied_twice",
           "norm_after_residual_attn": "norm_after_residual", "norm_after_residual_ffn": "norm_after_residual",
           "residual_from_normed_attn": "residual_from_normed", "residual_from_normed_ffn": "residual_from_normed",
           "ffn_before_attention_norm1_first": "ffn_before_attention", "gelu_twice_fc1": "gelu_twice",
           "scale_twice": "scale_misplaced", "scale_inverted": "scale_misplaced", "scale_after_softmax": "scale_misplaced",
           **{f"decoder_interp_{mode}": "decoder_interp_mode" for mode in ("nearest", "bicubic", "area")},
           **{f"decoder_concat_{''.join(map(str, order))}": "decoder_concat_permuted"
              for order in itertools.permutations(range(4)) if order not in ((3, 2, 1, 0), (0, 1, 2, 3))}}

# why each mistake is one: the first report that names a mistake says this; the fix (MISTAKES)
# comes when the same mistake is named again (localise.hint_lines)
WHY: dict[str, str] = {
    "no_padding": "a convolution without padding drops the border: its windows never centre on the edge "
                  "pixels, so the token grid comes out smaller than SegFormer's",
    "embed_no_norm": "the patch embedding ends with a LayerNorm over each token's channels; without it the "
                     "tokens reach the blocks at another scale than the released model's",
    "flatten_no_permute": "a reshape keeps the memory order, which for (B, C, H, W) is channel by channel: "
                          "the numbers of one token end up spread over several tokens",
    "column_major": "token n must be pixel (n // W, n % W), rows first, the order every other part "
                    "(and tokens_to_image) assumes",
    "hw_swapped": "H counts rows and W columns; a non-square grid read the other way round puts every "
                  "token in the wrong place",
    "unflatten_no_permute": "tokens (B, N, C) hold each token's channels together; a reshape to (B, C, H, W) "
                            "reads them as if channels came first, mixing pixels and channels",
    "grid_not_checked": "a grid that does not fit the tokens is a caller's mistake, and it should stop with a "
                        "clear error instead of an unrelated one or, worse, a silent reshape",
    "sqrt_hw": "N tokens fit many grids (a 4x16 grid also has 64); only the grid the tokens came from is right",
    "heads_over_tokens": "heads split the channels: every head sees every token, through dim // num_heads "
                         "of its channels",
    "merge_no_permute": "out is (B, heads, N, d); reshaping it to (B, N, C) without moving the head axis "
                        "next to d mixes tokens across heads",
    "no_scale": "q.k sums d_head products, so its spread grows with d_head; unscaled scores make the softmax "
                "too peaked",
    "scale_dim": "each head's dot product has d_head = dim // num_heads terms, not dim",
    "scale_misplaced": "the scale brings the scores to unit spread before the softmax turns them into "
                       "weights; after the softmax it only shrinks weights that must sum to 1, and twice or "
                       "inverted it leaves the scores too flat or too peaked",
    "softmax_axis": "each query's weights over the keys must sum to 1; over the other axis, each key's "
                    "weights over the queries do",
    "conv_channels_last": "Conv2d reads (B, C, H, W); a reshape of (B, N, C) to that shape does not move "
                          "the channels, it reinterprets the memory",
    "sr_no_norm": "the reduced tokens are normalised before they become keys and values, as in the "
                  "released model",
    "no_reduction": "sequence reduction is what makes this attention efficient: keys and values come from "
                    "the grid shrunk sr_ratio times per side",
    "kv_swapped": "the fused kv Linear's first dim outputs are the keys and the last dim the values, as in "
                  "the released weights",
    "sr_kernel_stride": "each key should summarise one sr x sr patch of the grid, with no overlap and no gap",
    "no_proj": "attention ends with the output projection, which mixes the heads' results",
    "dwconv_no_groups": "a depthwise conv gives each channel its own 3x3 filter; a full conv mixes all "
                        "channels (and has other weight shapes)",
    "gelu_before_dwconv": "Mix-FFN's order is fc1, the depthwise conv, then GELU, then fc2",
    "gelu_after_fc2": "Mix-FFN's order is fc1, the depthwise conv, then GELU, then fc2",
    "gelu_twice": "Mix-FFN has one nonlinearity, between the depthwise conv and fc2; a second GELU bends "
                  "values the weights were trained to see unbent",
    "no_gelu": "without the activation, fc1, the conv and fc2 collapse into one linear map",
    "relu": "SegFormer's Mix-FFN uses GELU, and the weights were trained with it",
    "gelu_tanh": "the released model uses the exact GELU; the tanh form differs in the 4th decimal",
    "no_dwconv": "the depthwise 3x3 conv is what gives Mix-FFN (and MiT, which has no position embedding) "
                 "its sense of position",
    "ffn_residual": "the residual connection belongs to the Block, which adds it around the whole branch",
    "post_norm": "MiT normalises each branch's input (pre-norm), not the sum after the residual",
    "no_attn_residual": "each branch adds its result to its input; without the residual the block forgets "
                        "its input",
    "no_ffn_residual": "each branch adds its result to its input; without the residual the block forgets "
                       "its input",
    "norm1_twice": "each branch has its own LayerNorm with its own weights",
    "parallel_branches": "the branches run one after the other: Mix-FFN reads the attention branch's result",
    "no_drop_path": "stochastic depth drops each residual branch at random during training",
    "norm_applied_twice": "a LayerNorm ends with its own learned scale and shift, so a second pass normalises "
                          "the rescaled tokens again and rescales them once more: the branch reads other numbers "
                          "than the ones its weights were trained on",
    "norm_after_residual": "in a pre-norm block the LayerNorm only shapes what a branch reads; the residual "
                           "stream, the running sum x, is carried from block to block as it is (the stage has its "
                           "own LayerNorm after the last block), so a norm on the sum changes every later block's "
                           "input",
    "ffn_before_attention": "each branch reads the other's result, so the two do not commute: a block first mixes "
                            "the tokens with attention and then transforms each token with Mix-FFN, the order "
                            "its weights were trained in",
    "residual_from_normed": "the residual connection carries the block's input past the branch unchanged; "
                            "overwriting x with its normalised version loses that input, so the sum no longer "
                            "starts from it",
    "norms_swapped": "norm1 and norm2 each hold a learned scale and shift, trained for the branch they sit in "
                     "front of; the names in the checkpoint say which is which",
    "inplace_input": "an in-place update changes the caller's tensor, which the caller may still need",
    "batch_hard_coded": "a batch holds several images; a size written as 1 is right for one image only",
    "batch_written_as_number": "a batch holds however many images the caller hands over; a size written as a "
                               "number is right for that many only",
    "stage_no_norm": "each stage ends with a LayerNorm on its tokens before they become a feature map",
    "stage_returns_tokens": "a stage hands on a feature map (B, C, H, W), which the next stage's conv reads",
    "ffn_hidden_width": "the Mix-FFN widens each token to mlp_ratio times the block's width and back, as "
                        "ViT's MLP does; this check builds blocks with mlp_ratio=2 too, so a width written for "
                        "one ratio shows",
    "stage_norm_every_block": "each block normalises inside its own branches (norm1, norm2); the stage's "
                              "norm normalises what the last block hands over, once, before the tokens "
                              "become the stage's map",
    "encoder_last_only": "the decoder reads every stage's map, so the encoder returns all four",
    "encoder_not_chained": "each stage reads the previous stage's feature map: that is what makes the "
                           "encoder hierarchical",
    "encoder_chains_tokens": "the next stage starts with a Conv2d, which reads (B, C, H, W)",
    "decoder_concat_order": "the fuse conv's weights were trained with a fixed order of input channels, the "
                            "released code's",
    "decoder_full_size": "the head predicts at stride 4, stage 1's grid; the image size comes later, at "
                         "prediction time",
    "decoder_scale_factor": "the stage grids round up, so a fixed factor misses stage 1's size when a side "
                            "is not a multiple of 32",
    "decoder_align_corners": "align_corners changes where the upsampled samples sit; the weights were "
                             "trained with the released code's choice",
    "decoder_concat_permuted": "the fuse conv reads its 4D input channels as four blocks of D, each trained "
                               "on one stage's map: a block in another place feeds weights maps they never saw",
    "decoder_interp_mode": "the interpolation decides the upsampled values between the coarse map's samples; "
                           "the weights were trained on the released code's bilinear ones",
    "decoder_no_norm": "the fuse conv has no bias: its BatchNorm supplies the scale and shift",
    "decoder_no_relu": "the ReLU is the head's only nonlinearity: without it the Linears, the fuse conv, the "
                       "BatchNorm (in eval mode a fixed scale and shift) and the classifier collapse into one "
                       "linear map, unlike the head the released weights were trained as",
    "decoder_relu_before_norm": "the BatchNorm's scale and shift decide which features the ReLU cuts to zero; "
                                "a ReLU first hands the BatchNorm only non-negative inputs, and its output, "
                                "shifted and rescaled, is no longer cut at zero",
    "decoder_norm_twice": "a BatchNorm normalises with the statistics it keeps of the fuse conv's output, then "
                          "rescales; a second pass normalises features those statistics no longer describe",
    "decoder_dropout_after_classifier": "dropout hides some of the features the classifier reads, so that it "
                                        "cannot lean on a few of them; on the logits it erases class scores "
                                        "instead. In eval mode dropout does nothing, which is why only training "
                                        "mode shows the difference",
    "decoder_no_norm_no_relu": "the paper's Eq. 4 writes the fusion as one Linear, but the released head fuses "
                               "with a conv followed by BatchNorm and ReLU, and its weights were trained with "
                               "all three",
    "decoder_linear_axis": "nn.Linear acts on the last axis, which must hold the channels",
}
