"""The checkers' feedback for mistakes outside the catalogue (segformer_lite.course.checks.localise):
where the learner's module first parts from the reference, which cases pass, hints that teach
before they tell, the learner's arguments kept from the reference, and failures shown without
the checker's frames."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from einops import rearrange

import segformer_lite as sl
from segformer_lite.course import checks
from segformer_lite.course.checks import harness, localise

from test_checks import StudentAttention, StudentBlock, StudentDecoder, StudentMixFFN, StudentPatchEmbed, planted


def report_of(check, student) -> str:
    with pytest.raises(AssertionError) as e:
        check(student)
    return str(e.value)


def step_line(report: str) -> str:
    return next(line for line in report.splitlines() if line.startswith("Step by step"))


# --- three uncatalogued mistakes from the issue ------------------------------------------------

class HeadsMergedDH(StudentAttention):
    """Heads merged back as 'b h n d -> b n (d h)'."""

    def forward(self, x, hw, return_attention=False):
        B, N, C = x.shape
        q = self.heads(self.q(x))
        x_ = x
        if self.sr_ratio > 1:
            x_ = self.norm(self.sr(x.transpose(1, 2).reshape(B, C, *hw)).flatten(2).transpose(1, 2))
        k, v = self.kv(x_).chunk(2, dim=-1)
        attn = (q @ self.heads(k).transpose(-2, -1) * self.scale).softmax(-1)
        out = self.proj(rearrange(attn @ self.heads(v), "b h n d -> b n (d h)"))
        return (out, attn) if return_attention else out


def test_heads_merged_in_another_order_is_localised_at_the_input_to_proj():
    report = report_of(checks.check_efficient_self_attention, HeadsMergedDH)
    assert "No catalogued mistake" not in report and "Likely mistake" not in report, report
    line = step_line(report)
    assert "q, sr, norm, kv and the attention weights match; the input to proj differs (same shape" in line, report
    assert "the same numbers in another order" in line, report
    assert "merging the heads back" in report, report
    assert "Cases: it passes with num_heads=1 and fails with num_heads=2, 3 and 4." in report, report
    assert localise.SHAPE_ADVICE not in report  # every shape is right


class NormAfterRelu(StudentDecoder):
    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        outs = [F.interpolate(linear(c.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, *c.shape[2:]),
                              size=(h1, w1), mode=self.mode, align_corners=self.align)
                for c, linear in zip(feats, self.linear_c)]
        x = self.fuse(torch.cat(outs[::-1], dim=1))
        x = self.norm(F.relu(x)) if self.norm_last else F.relu(self.norm(x))
        return self.classifier(self.dropout(x))

    mode, align, norm_last = "bilinear", False, True


class Nearest(NormAfterRelu):
    mode, align, norm_last = "nearest", None, False


def test_norm_after_relu_is_named_and_localised_at_the_input_to_norm():
    report = report_of(checks.check_all_mlp_decoder, NormAfterRelu)  # catalogued since the 06 trial
    assert f"Likely mistake: {checks.MISTAKES['decoder_relu_before_norm'].title}." in report, report
    line = step_line(report)
    assert "linear_c[0], linear_c[1], linear_c[2], linear_c[3] and fuse match; the input to norm differs" in line


def test_a_layer_called_once_too_often_is_named_where_it_happens():
    report = report_of(checks.check_all_mlp_decoder, planted(StudentDecoder, "decoder_norm_twice"))
    assert step_line(report).endswith("fuse and norm match; but norm is called twice, where the reference "
                                      "calls it once."), report
    assert "look there" not in report, report  # no advice pointing at the ReLU


def test_the_same_calls_in_another_order_are_named():
    report = report_of(checks.check_all_mlp_decoder, planted(StudentDecoder, "decoder_dropout_after_classifier"))
    assert "Cases" not in report and "training mode" in report.splitlines()[0], report  # eval mode passes
    assert step_line(report).endswith("fuse and norm match; but classifier is called before dropout, where the "
                                      "reference calls dropout first."), report
    assert "ReLU" not in report and localise.SHAPE_ADVICE not in report, report
    report = report_of(checks.check_block, planted(StudentBlock, "ffn_before_attention"))
    assert step_line(report).endswith("on that input: norm2 is called before norm1, where the reference calls "
                                      "norm1 first."), report


def test_nearest_upsampling_is_localised_at_the_input_to_fuse():
    report = report_of(checks.check_all_mlp_decoder, Nearest)
    assert "linear_c[3] match; the input to fuse differs (same shape (2, 48, 16, 16)" in step_line(report)
    assert "upsampled to one common grid and concatenated along the channels" in report
    assert "align_corners=False" not in report  # the first report does not hand over the decision
    assert localise.SHAPE_ADVICE not in report


class Eq4Literally(StudentDecoder):
    """Eq. 4 as printed: no BatchNorm, no ReLU."""

    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        outs = [F.interpolate(linear(c.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, *c.shape[2:]),
                              size=(h1, w1), mode="bilinear", align_corners=False)
                for c, linear in zip(feats, self.linear_c)]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs[::-1], dim=1))))


def test_a_layer_never_called_is_named_beside_what_comes_out_wrong():
    """A layer forward never calls may have its step written another way (a torch.nn.functional
    call): the report leads with the first value that differs, and names the layer as a fact."""
    report = report_of(checks.check_all_mlp_decoder, Eq4Literally)
    assert "fuse match; the input to dropout differs (same shape (2, 12, 16, 16)" in step_line(report), report
    assert "forward never calls norm, where the reference calls it once (on fuse's output)." in report, report


class TokenAxisNorm(StudentAttention):
    """The reduction's LayerNorm applied to (B, C, M), the token axis last: runs only where M == C."""

    def forward(self, x, hw, return_attention=False):
        B, N, C = x.shape
        q = self.heads(self.q(x))
        x_ = x
        if self.sr_ratio > 1:
            x_ = self.norm(self.sr(x.transpose(1, 2).reshape(B, C, *hw)).flatten(2)).transpose(1, 2)
        k, v = self.kv(x_).chunk(2, dim=-1)
        attn = (q @ self.heads(k).transpose(-2, -1) * self.scale).softmax(-1)
        out = self.proj((attn @ self.heads(v)).transpose(1, 2).reshape(B, N, C))
        return (out, attn) if return_attention else out


def test_layer_norm_over_the_token_axis_is_localised_at_the_input_to_norm():
    report = report_of(checks.check_efficient_self_attention, TokenAxisNorm)
    assert "q and sr match; the input to norm differs (shape (2, 16, 6) where the reference's is (2, 6, 16))" \
        in step_line(report), report
    assert "flattening sr's map (B, C, H/sr, W/sr) back to tokens (B, M, C)" in report
    assert localise.SHAPE_ADVICE in report


# --- cases, shape advice, frames -------------------------------------------------------------------

class SizeSwapped(StudentDecoder):
    """Upsamples every map to (W_1, H_1): right on square grids only."""

    def forward(self, feats):
        n, _, h1, w1 = feats[0].shape
        outs = [F.interpolate(linear(c.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, *c.shape[2:]),
                              size=(w1, h1), mode="bilinear", align_corners=False)
                for c, linear in zip(feats, self.linear_c)]
        return self.classifier(self.dropout(F.relu(self.norm(self.fuse(torch.cat(outs[::-1], dim=1))))))


def test_square_passes_and_non_square_fails_is_said():
    report = report_of(checks.check_all_mlp_decoder, SizeSwapped)
    assert "Cases: it passes on square grids (16x16) and fails on non-square ones (10x18 and 16x24)." in report, report
    assert "the input to fuse differs (shape (2, 48, 24, 16) where the reference's is (2, 48, 16, 24))" in report
    assert localise.SHAPE_ADVICE in report


class TrainOnly(StudentBlock):
    """Right in eval mode; in training mode DropPath is applied twice to the FFN branch."""

    def forward(self, x, hw):
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.drop_path(self.ffn(self.norm2(x), hw)))


def test_eval_passes_and_train_fails_is_said():
    report = report_of(checks.check_block, TrainOnly)
    assert "Cases: it passes in eval mode and fails in training mode." in report, report
    assert "drop_path is called 3 times, where the reference calls it twice" in report, report


def test_shape_advice_only_when_a_shape_differs():
    class Narrow(StudentDecoder):
        def forward(self, feats):
            return super().forward(feats)[:, :, :-1]
    assert localise.SHAPE_ADVICE in report_of(checks.check_all_mlp_decoder, Narrow)
    assert localise.SHAPE_ADVICE not in report_of(checks.check_all_mlp_decoder, Nearest)


def test_a_wrong_result_renders_without_frames_and_a_crash_with_the_learners_only():
    with pytest.raises(AssertionError) as e:
        checks.check_all_mlp_decoder(Nearest)
    rendered = e.value._render_traceback_()
    assert rendered == str(e.value).splitlines()  # one short report, no traceback

    class Crashing(StudentMixFFN):
        def forward(self, x, hw):
            return self.fc2(x)  # hidden-size mismatch inside the learner's code
    with pytest.raises(AssertionError) as e:
        checks.check_mix_ffn(Crashing)
    rendered = "\n".join(e.value._render_traceback_())
    assert rendered.startswith("MixFFN: raised RuntimeError for x of shape (2, 60, 8)"), rendered
    assert "return self.fc2(x)  # hidden-size mismatch" in rendered and __file__ in rendered
    for hidden in ("checks/checkers.py", "checks/harness.py", "checks/localise.py", "torch/nn"):
        assert hidden not in rendered, rendered
    assert rendered.endswith("RuntimeError: mat1 and mat2 shapes cannot be multiplied (120x8 and 24x8)")


# --- the reference never sees the learner's tensors ------------------------------------------------

class ReversesThenRight(StudentDecoder):
    """Reverses the caller's list, then computes the right logits from it."""

    def forward(self, feats):
        feats.reverse()  # deepest first
        return super().forward(feats[::-1])


class ReversesThenWrong(StudentDecoder):
    def forward(self, feats):
        feats.reverse()
        return super().forward(feats)


def test_a_list_reversed_in_place_is_named_and_never_reaches_the_reference(capsys):
    checks.check_all_mlp_decoder(ReversesThenRight)  # the output is right: the hidden tests pass it too
    out = capsys.readouterr().out
    assert out.startswith("✓ AllMLPDecoder"), out  # ... and the check mark says what it did to the list
    assert out.count("Note: forward reversed the list feats it was given, in place (feats.reverse())") == 1, out
    report = report_of(checks.check_all_mlp_decoder, ReversesThenWrong)
    assert "Note: forward reversed the list feats it was given, in place (feats.reverse())" in report, report
    assert "AllMLPDecoder.forward" not in report and "segformer_lite/decoder.py" not in report


def test_an_input_changed_in_place_is_named():
    report = report_of(checks.check_block, planted(StudentBlock, "inplace_input"))
    assert report.startswith("Block: changed its input x in place for x of shape"), report


def test_the_learner_gets_copies():
    x, feats = torch.zeros(2), [torch.ones(3), torch.ones(1)]
    given = localise.copies((x, feats, (4, 5)))
    assert given[0] is not x and given[1] is not feats and given[1][0] is not feats[0] and given[2] == (4, 5)
    given[1].reverse()
    given[0].add_(1)

    def forward(x, feats, hw):
        pass
    assert localise.changed(forward, given, (x, feats, (4, 5))) == [
        "changed its input x in place", "reversed the list feats it was given, in place (feats.reverse())"]


# --- hints teach before they tell -------------------------------------------------------------

def test_the_fix_comes_when_the_same_mistake_comes_back():
    mistake = checks.MISTAKES["no_scale"]
    first = report_of(checks.check_efficient_self_attention, planted(StudentAttention, "no_scale"))
    assert f"Likely mistake: {mistake.title}." in first and checks.mistakes.WHY["no_scale"] in first
    assert mistake.fix not in first
    other = report_of(checks.check_efficient_self_attention, planted(StudentAttention, "softmax_axis"))
    assert checks.MISTAKES["softmax_axis"].fix not in other  # counted per mistake
    again = report_of(checks.check_efficient_self_attention, planted(StudentAttention, "no_scale"))
    assert mistake.fix in again
    localise.reset()
    assert mistake.fix not in report_of(checks.check_efficient_self_attention, planted(StudentAttention, "no_scale"))


def test_every_catalogued_mistake_says_why():
    assert set(checks.mistakes.WHY) == set(checks.MISTAKES)


def test_the_hw_fix_reads_the_grid_from_a_map_or_the_hw_argument():
    fix = checks.MISTAKES["hw_swapped"].fix
    assert "h, w = hw" in fix and "(B, C, H, W)" in fix and "(B, N, C)" in fix


# --- the comparison itself ---------------------------------------------------------------------

def test_a_permutation_of_the_values_is_recognised():
    x = torch.randn(2, 6, 4)
    assert "the same numbers in another order" in localise.differ(x.transpose(1, 2).reshape(2, 6, 4), x).text
    assert "the same numbers in another order" not in localise.differ(x + 1, x).text
    assert localise.differ(x.clone(), x) is None
    assert localise.differ(x[:, :5], x).shape


def test_the_summary_finds_the_attribute_that_tells_cases_apart():
    rows = {"a": ({"num_heads": 1, "grid": (8, 8)}, None), "b": ({"num_heads": 2, "grid": (8, 8)}, "wrong"),
            "c": ({"num_heads": 4, "grid": (4, 16)}, "wrong")}
    assert localise.summary(rows) == "Cases: it passes with num_heads=1 and fails with num_heads=2 and 4."
    rows["d"] = ({"num_heads": 1, "grid": (4, 16)}, "wrong")
    assert localise.summary(rows) == "Cases: 1 of 4 inputs pass, a; it fails b; c (and 1 more)."


def test_an_exception_while_localising_never_hides_the_report():
    class Weird(StudentMixFFN):
        calls = 0

        def forward(self, x, hw):
            Weird.calls += 1
            if Weird.calls > 1:  # the checker's call is the first; localising calls again
                raise KeyError("only once")
            return super().forward(x, hw) + 1
    report = report_of(checks.check_mix_ffn, Weird)
    assert report.startswith("MixFFN: wrong output"), report


def test_the_decoder_check_runs_the_shipped_head_on_two_photos(capsys):
    checks.check_all_mlp_decoder(StudentDecoder)
    assert "gives sl.SegFormer's logits on two 300x451 photos" in capsys.readouterr().out
    model, feats, logits = checks.checkers._shipped_photos()
    assert [tuple(f.shape[:2]) for f in feats] == [(2, c) for c in model.config.embed_dims]
    assert tuple(logits.shape) == (2, model.num_classes, 75, 113)


# --- notebook 01: messages found by doing the exercise as a student would -------------------------

class LayerNormOverTokensAndChannels(StudentPatchEmbed):
    """F.layer_norm over (N, C), with the module's weight and bias spread over the tokens."""

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        t = x.flatten(2).transpose(1, 2)
        weight, bias = (p.expand(t.shape[1:]) for p in (self.norm.weight, self.norm.bias))
        return F.layer_norm(t, t.shape[1:], weight, bias, self.norm.eps), (h, w)


class FunctionalLayerNorm(StudentPatchEmbed):
    """The norm's step through F.layer_norm with the layer's own settings: right."""

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        t = x.flatten(2).transpose(1, 2)
        return F.layer_norm(t, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps), (h, w)


def test_a_layer_done_another_way_is_judged_by_what_comes_out(capsys):
    report = report_of(checks.check_overlap_patch_embed, LayerNormOverTokensAndChannels)
    assert "proj matches; the tokens differ (same shape (2, 54, 16)" in step_line(report), report
    assert "forward never calls norm, where the reference calls it once" in report, report
    assert "is fine when it computes the same" in report and "norm is never called" not in report, report
    checks.check_overlap_patch_embed(FunctionalLayerNorm)  # the same step written another way passes
    assert "✓ OverlapPatchEmbed" in capsys.readouterr().out


def test_padding_same_on_a_strided_conv_is_explained():
    class Same(StudentPatchEmbed):
        def __init__(self, in_channels, embed_dim, patch_size=7, stride=4, eps=1e-5):
            super().__init__(in_channels, embed_dim, patch_size, stride, eps)
            self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride, padding="same")
    report = report_of(checks.check_overlap_patch_embed, Same)
    assert "torch refuses padding='same' for a strided convolution" in report, report
    assert "give this conv's padding in pixels" in report and "Keep the skeleton's constructor" not in report, report
    assert "patch_size // 2" not in report  # the first report does not hand over the decision


def test_a_crash_inside_a_layer_says_whether_its_input_matches():
    class NormFirst(StudentPatchEmbed):
        def forward(self, x):
            x = self.proj(self.norm(x))
            h, w = x.shape[-2:]
            return x.flatten(2).transpose(1, 2), (h, w)
    line = step_line(report_of(checks.check_overlap_patch_embed, NormFirst))
    assert "your code raised inside norm, called before proj (the reference calls proj first), whose input " \
           "differs from the reference's (shape (2, 10, 12, 18) where the reference's is (2, 54, 16))" in line, line
    assert "whose input matches" not in line
