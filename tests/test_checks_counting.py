"""Notebook 00's exercise checker, ``check_count_attention``: a right count passes, every
catalogued mistake is named (alone and combined), malformed answers are explained, and the checker
agrees with the notebook's hidden tests on every planted variant (a check mark means full marks)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import segformer_lite as sl
from segformer_lite.course.checks import COUNTING_MISTAKES, check_count_attention
from segformer_lite.course.checks.counting import CASES, COUNTING_WHY, planted_count

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_why_efficient_attention.ipynb"
STUDENT = NOTEBOOK.parent / "exercises" / NOTEBOOK.name


def by_conv(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """The counts read off real torch convolutions, independent of the package's grid code."""
    patches = nn.Conv2d(1, 1, patch_size, stride, padding=patch_size // 2)
    grid = patches(torch.zeros(1, 1, height, width)).shape[-2:]
    keys = nn.Conv2d(1, 1, sr_ratio, sr_ratio)(torch.zeros(1, 1, *grid)).shape[-2:]
    n, m = grid[0] * grid[1], keys[0] * keys[1]
    return n, m, num_heads * n * m


def stride_4_always(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """Right for stage 1, wrong for any other stride: the stride is hard-coded."""
    h, w = -(-height // 4), -(-width // 4)
    return h * w, (h // sr_ratio) * (w // sr_ratio), num_heads * h * w * (h // sr_ratio) * (w // sr_ratio)


def ceil_grid(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """Right: for an odd kernel padded by k // 2 the grid is ceil(n / stride)."""
    h, w = -(-height // stride), -(-width // stride)
    m = (h // sr_ratio) * (w // sr_ratio)
    return h * w, m, num_heads * h * w * m


def as_list(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """Right counts in a list, where the contract says a tuple."""
    return list(by_conv(height, width, sr_ratio, num_heads, patch_size, stride))


def the_article(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """The seed article's count: every pixel a token, every token a key."""
    n = height * width
    return n, n, num_heads * n * n


def hidden_tests() -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    [cell] = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade_id") == "check_count_attention"]
    source = "".join(cell["source"])
    return source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]


def passes_hidden_tests(count_fn) -> bool:
    namespace = {"torch": torch, "sl": sl, "count_attention": count_fn, "print": lambda *a, **k: None}
    try:
        exec(hidden_tests(), namespace)
    except AssertionError:
        return False
    return True


def passes_checker(count_fn) -> bool:
    try:
        check_count_attention(count_fn)
    except AssertionError:
        return False
    return True


def test_right_count_passes(capsys):
    check_count_attention(by_conv)
    out, err = capsys.readouterr()
    assert out.startswith("✓ count_attention: right on 6 images") and err == ""


def test_the_reference_equals_real_convolutions():
    for case in CASES:
        assert planted_count(())(*case) == by_conv(*case), case


def report(count_fn) -> str:
    with pytest.raises(AssertionError) as e:
        check_count_attention(count_fn)
    return str(e.value)


@pytest.mark.parametrize("mistake", sorted(COUNTING_MISTAKES))
def test_each_mistake_is_named_why_first_and_the_fix_when_it_comes_back(mistake):
    first = report(planted_count((mistake,)))
    assert f"Likely mistake: {COUNTING_MISTAKES[mistake].title}." in first, first
    assert f"Why it is one: {COUNTING_WHY[mistake]}." in first and COUNTING_MISTAKES[mistake].fix not in first, first
    assert first.count("Likely mistake:") == 1, first
    again = report(planted_count((mistake,)))
    assert f"How to fix: {COUNTING_MISTAKES[mistake].fix}." in again and "Why it is one" not in again, again


def test_every_counting_mistake_says_why():
    assert set(COUNTING_WHY) == set(COUNTING_MISTAKES)


def forgot_plus_one(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """The conv formula written out without its + 1."""
    pad = patch_size // 2
    h, w = ((v + 2 * pad - patch_size) // stride for v in (height, width))
    m = (h // sr_ratio) * (w // sr_ratio)
    return h * w, m, num_heads * h * w * m


def one_sided_padding(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """The padding counted once, not on both sides: for MiT's convs (k7 s4, k3 s2) the same as H // stride."""
    h, w = ((v + patch_size // 2 - patch_size) // stride + 1 for v in (height, width))
    m = (h // sr_ratio) * (w // sr_ratio)
    return h * w, m, num_heads * h * w * m


def n_and_m_swapped(*args, **kwargs):
    n, m, scores = by_conv(*args, **kwargs)
    return m, n, scores


def heads_twice(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    n, m, scores = by_conv(height, width, sr_ratio, num_heads, patch_size, stride)
    return n, m, num_heads * scores


def reduced_twice(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
    """The reduction written twice: once per side, then the key grid divided again."""
    h, w = -(-height // stride), -(-width // stride)
    kh, kw = h // sr_ratio // sr_ratio, w // sr_ratio // sr_ratio
    return h * w, kh * kw, num_heads * h * w * kh * kw


@pytest.mark.parametrize("fn, mistake", [(forgot_plus_one, "count_conv_no_plus_one"),
                                         (one_sided_padding, "count_floor_grid"),
                                         (n_and_m_swapped, "count_n_m_swapped"),
                                         (heads_twice, "count_heads_twice"),
                                         (reduced_twice, "count_keys_reduced_twice")])
def test_the_new_mistakes_written_by_hand_are_named(fn, mistake):
    """Written as a learner would, not planted: each is named, and alone."""
    message = report(fn)
    assert f"Likely mistake: {COUNTING_MISTAKES[mistake].title}." in message, message
    assert message.count("Likely mistake:") == 1, message


def test_one_sided_padding_and_floor_division_are_one_entry():
    """Both give H // stride for every MiT patch conv, so the entry's title names both."""
    for h, w, _, _, k, s in CASES:
        assert one_sided_padding(h, w, 1, patch_size=k, stride=s)[0] == (h // s) * (w // s)
    title = COUNTING_MISTAKES["count_floor_grid"].title
    assert "H // stride" in title and "one side only" in title


def learners_keys(keys_per_side):
    """A learner's count_attention, right but for the reduction conv: ``keys_per_side(H', sr)``
    gives the key grid's side, written as the learner wrote it."""
    def count(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
        h, w = ((v + 2 * (patch_size // 2) - patch_size) // stride + 1 for v in (height, width))
        m = keys_per_side(h, sr_ratio) * keys_per_side(w, sr_ratio)
        return h * w, m, num_heads * h * w * m
    return count


# the reduction conv's slips, as a learner writes them
KEYS_NO_PLUS_ONE = learners_keys(lambda h, sr: (h - sr) // sr)                      # the formula without + 1
KEYS_PADDED = learners_keys(lambda h, sr: (h + 2 * (sr // 2) - sr) // sr + 1)        # padded by sr // 2
KEYS_PLUS_ONE = learners_keys(lambda h, sr: h // sr + 1)                             # a + 1 on the floor
KEYS_ROUND = learners_keys(lambda h, sr: round(h / sr))                              # round() on the key grid


@pytest.mark.parametrize("fn, mistake", [(KEYS_NO_PLUS_ONE, "count_keys_no_plus_one"),
                                         (KEYS_PADDED, "count_keys_padded"),
                                         (KEYS_PLUS_ONE, "count_keys_padded"),
                                         (KEYS_ROUND, "count_keys_round")],
                         ids=["(H' - sr) // sr", "padded by sr // 2", "H' // sr + 1", "round(H' / sr)"])
def test_the_reduction_convs_slips_written_by_hand_are_named_why_first_then_fixed(fn, mistake):
    """Recognised by what they count, not by a planted id: named alone with why it is one, then the fix."""
    entry = COUNTING_MISTAKES[mistake]
    first = report(fn)
    assert f"Likely mistake: {entry.title}." in first and first.count("Likely mistake:") == 1, first
    assert f"Why it is one: {COUNTING_WHY[mistake]}." in first and entry.fix not in first, first
    assert "No catalogued mistake" not in first, first
    again = report(fn)
    assert f"Likely mistake: {entry.title}." in again and f"How to fix: {entry.fix}." in again, again
    assert "Why it is one" not in again, again


def test_a_padded_reduction_and_a_plus_one_on_the_floor_are_one_entry():
    """Both give H' // sr + 1 for an even sr, and every sr of the checker is even, so the checker
    cannot tell them apart: the entry's title names both and says when they agree."""
    assert all(sr % 2 == 0 for _, _, sr, *_ in CASES) and {sr for _, _, sr, *_ in CASES} == {2, 4, 8}
    assert all(KEYS_PADDED(*case) == KEYS_PLUS_ONE(*case) for case in CASES)
    title = COUNTING_MISTAKES["count_keys_padded"].title
    assert "padded by sr_ratio // 2" in title and "H' // sr_ratio + 1" in title and "2, 4 and 8" in title


# the two entries that name two slips; a slip that maps to an entry already named gets the fix on its
# first appearance, so the title must name it and the fix must answer it: (slip, slip, what the fix
# says for each)
MERGED = {"count_floor_grid": (planted_count(("count_floor_grid",)), one_sided_padding,
                               ("rounds up", "both sides' padding")),
          "count_keys_padded": (KEYS_PLUS_ONE, KEYS_PADDED, ("already counts its windows", "has no padding"))}


@pytest.mark.parametrize("mistake", sorted(MERGED))
@pytest.mark.parametrize("order", ["as listed", "reversed"])
def test_a_merged_entrys_fix_answers_the_slip_it_comes_first_to(mistake, order):
    one, other, fix_says = MERGED[mistake]
    first_slip, second_slip = (one, other) if order == "as listed" else (other, one)
    assert "Why it is one" in report(first_slip)
    message = report(second_slip)  # the other slip, never seen before, gets the fix straight away
    entry = COUNTING_MISTAKES[mistake]
    assert f"Likely mistake: {entry.title}." in message and f"How to fix: {entry.fix}." in message, message
    assert all(words in entry.fix for words in fix_says), entry.fix


def test_the_checker_never_asks_for_a_reduction_larger_than_the_grid():
    """The contract (notebook 00, cell 12) says such layers are never asked: no layer can run on them,
    and the package refuses them with a ValueError."""
    for h, w, sr, heads, k, s in CASES:
        grid = [sl.conv_output_size(v, k, s, k // 2) for v in (h, w)]
        assert sr <= min(grid), (h, w, sr)
    with pytest.raises(ValueError, match="sr_ratio=8 is larger than the 4x4 token grid"):
        sl.reduced_grid((4, 4), 8)
    from segformer_lite.course.cost import attention_cost
    with pytest.raises(ValueError, match="sr_ratio=8 is larger than the 4x4 token grid"):
        attention_cost(4, 4, 32, 1, sr_ratio=8)
    [contract] = [c for c in student_cells() if "Its contract" in c]
    assert "never larger than a side of the patch grid" in contract and "ValueError" in contract, contract
    assert "need not handle it" in contract, contract


def student_cells() -> list[str]:
    return ["".join(c["source"]) for c in json.loads(STUDENT.read_text(encoding="utf-8"))["cells"]]


# what cell 15's prediction asks for; the measuring cell below it may print the numbers but not say
# why they are what they are (the reveal after it does)
REASONS = re.compile(r"rounded\s+(down|up)|rounds?\s+(down|up)|\bfloor|\bceil|partial window|divided by", re.I)


def test_the_cell_that_measures_the_prediction_does_not_explain_it_in_its_source():
    cells = json.loads(STUDENT.read_text(encoding="utf-8"))["cells"]
    [answer] = [i for i, c in enumerate(cells)
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "predict_count_75x203"]
    measuring = cells[answer + 1]
    assert measuring["cell_type"] == "code", measuring
    assert not REASONS.search("".join(measuring["source"])), "".join(measuring["source"])
    assert REASONS.search('"each side of the grid is divided by {sr} and rounded down"')  # the old source fails


def test_two_mistakes_are_both_named():
    with pytest.raises(AssertionError) as e:
        check_count_attention(planted_count(("count_no_padding", "count_no_heads")))
    message = str(e.value)
    for mistake in ("count_no_padding", "count_no_heads"):
        assert f"Likely mistake: {COUNTING_MISTAKES[mistake].title}." in message, message
    assert message.count("Likely mistake:") == 2, message


def test_the_articles_count_is_named():
    with pytest.raises(AssertionError) as e:
        check_count_attention(the_article)
    message = str(e.value)
    for mistake in ("count_pixels", "count_no_reduction"):
        assert f"Likely mistake: {COUNTING_MISTAKES[mistake].title}." in message, message


def test_a_hard_coded_stride_fails_on_the_stage_2_conv():
    with pytest.raises(AssertionError) as e:
        check_count_attention(stride_4_always)
    assert "patch_size=3, stride=2" in str(e.value)


def test_uncatalogued_counts_say_which_number_is_wrong():
    def off_by_one_scores(*args, **kwargs):
        n, m, s = by_conv(*args, **kwargs)
        return n, m, s + 1
    with pytest.raises(AssertionError) as e:
        check_count_attention(off_by_one_scores)
    assert "No catalogued mistake" in str(e.value) and "scores is the first" in str(e.value)


def test_float_counts_are_explained():
    def true_division(height, width, sr_ratio, num_heads=1, patch_size=7, stride=4):
        n = (height / stride) * (width / stride)
        return n, n / sr_ratio ** 2, num_heads * n * n / sr_ratio ** 2
    with pytest.raises(AssertionError) as e:
        check_count_attention(true_division)
    assert "the contract is a Python int" in str(e.value) and "//" in str(e.value)
    assert "int(...)" not in str(e.value)


def np_prod_scores(*args, **kwargs):
    """Right counts, floor division throughout, but the scores from np.prod (a np.int64)."""
    n, m, _ = by_conv(*args, **kwargs)
    return int(n), int(m), np.prod([kwargs.get("num_heads", 1), int(n), int(m)])


def tensor_tokens(*args, **kwargs):
    n, m, scores = by_conv(*args, **kwargs)
    return torch.tensor(n), int(m), int(scores)


@pytest.mark.parametrize("fn, name, kind", [(np_prod_scores, "scores", "int64"), (tensor_tokens, "N", "Tensor")])
def test_numpy_and_tensor_integers_are_told_to_convert_with_int(fn, name, kind):
    message = report(fn)
    assert f"{name} is a whole number, but a {kind}" in message and "int(...)" in message, message
    assert "floor division" not in message, message


def test_two_numbers_instead_of_three_are_explained():
    with pytest.raises(AssertionError) as e:
        check_count_attention(lambda *args, **kwargs: by_conv(*args, **kwargs)[:2])
    assert "the contract is a tuple of three ints" in str(e.value)


def test_an_old_signature_is_explained():
    def no_patch_args(height, width, sr_ratio, num_heads=1):
        return by_conv(height, width, sr_ratio, num_heads)
    with pytest.raises(AssertionError) as e:
        check_count_attention(no_patch_args)
    assert "raised TypeError" in str(e.value) and "Keep the signature" in str(e.value)


def test_unfinished_is_reported_on_stderr_not_raised(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    check_count_attention(stub)
    out, err = capsys.readouterr()
    assert out == "" and "count_attention: not implemented yet" in err


def test_unknown_planted_mistake_is_refused():
    with pytest.raises(ValueError, match="unknown counting mistakes"):
        planted_count(("count_everything_twice",))


VARIANTS = {"right (conv)": by_conv, "right (ceil)": ceil_grid, "a list": as_list, "stride 4 hard-coded": stride_4_always,
            "the article": the_article, "np.prod scores": np_prod_scores, "tensor N": tensor_tokens,
            "keys: no + 1": KEYS_NO_PLUS_ONE, "keys: padded": KEYS_PADDED, "keys: + 1": KEYS_PLUS_ONE,
            "keys: round()": KEYS_ROUND,
            **{m: planted_count((m,)) for m in COUNTING_MISTAKES},
            "no padding + no heads": planted_count(("count_no_padding", "count_no_heads"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_checker_and_hidden_tests_agree(name):
    fn = VARIANTS[name]
    checker, hidden = passes_checker(fn), passes_hidden_tests(fn)
    assert checker == hidden, f"{name}: checker {'passes' if checker else 'fails'}, hidden tests {'pass' if hidden else 'fail'}"
    assert checker == name.startswith("right"), name


def understanding_answers() -> str:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    [cell] = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade_id") == "understanding_why_efficient_attention"]
    return "".join(cell["source"])


def test_the_transfer_answers_count_as_the_package_does():
    """Notebook 00's check-your-understanding answers (instructor version) state counts no cell
    prints; each one is recomputed here, from the package's grid arithmetic and cost model."""
    from segformer_lite.course.cost import attention_cost
    answers, count = understanding_answers(), planted_count(())
    said = lambda v: f"{v:,}" in answers  # noqa: E731  (the answers write thousands with commas)
    # 1. a 1000x700 photo, stage 1, sr 8
    n, m, scores = count(1000, 700, 8)
    assert (n, m) == (250 * 175, 31 * 21) and said(n) and said(m) and said(scores) and f"{n / 64:.1f}" in answers
    # 2. 512^2 to 2048^2 with sr 8, and with the key grid kept at 16x16 (sr 32)
    (n1, m1, s1), (n2, m2, s2), (_, m3, s3) = count(512, 512, 8), count(2048, 2048, 8), count(2048, 2048, 32)
    assert s2 // s1 == 256 and s3 // s1 == 16 and m3 == m1 == 256
    assert all(said(v) for v in (n1, n2, m2, s1, s2, s3)) and "×256" in answers and "×16" in answers
    # 3. sr 4, 2, 1, 1 at 512^2: the key grids and stage 1's scores
    grids = sl.stage_grid_sizes(sl.mit_config("b0"), 512, 512)
    keys = [sl.reduced_grid(g, sr) for g, sr in zip(grids, (4, 2, 1, 1))]
    assert keys == [(32, 32)] * 3 + [(16, 16)] and "32×32, 32×32, 32×32 and 16×16" in answers
    stage_scores = [g[0] * g[1] * k[0] * k[1] for g, k in zip(grids, keys)]
    assert max(stage_scores) == stage_scores[0] and said(stage_scores[0]) and said(count(512, 512, 8)[2])
    # 4. ViT-L/16 at 384^2: 16 heads, 24 layers, 576 patches and the class token
    tokens = (384 // 16) ** 2 + 1
    assert f"{tokens}×{tokens}" in answers and said(tokens * tokens) and said(16 * 24)
    # 5. 768^2, stage 1: full against sr 8, scores and the cost model's FLOPs
    (nf, _, sf), (_, mr, sr8) = count(768, 768, 1), count(768, 768, 8)
    full, reduced = attention_cost(192, 192, 32, 1, sr_ratio=1), attention_cost(192, 192, 32, 1, sr_ratio=8)
    assert said(nf) and said(sf) and said(sr8) and said(mr) and sf // sr8 == 64
    assert f"{full.flops / 1e9:.1f} GFLOPs full and {reduced.flops / 1e9:.1f} reduced" in answers
    assert f"{full.flops / reduced.flops:.0f} times" in answers
    # 6. 4x4 patches (k4 s4 p0) against the padded 7x7: 512^2 and 75x203
    assert sl.conv_output_size(512, 4, 4, 0) == sl.conv_output_size(512, 7, 4, 3) == 128
    g4 = [sl.conv_output_size(v, 4, 4, 0) for v in (75, 203)]
    g7 = [sl.conv_output_size(v, 7, 4, 3) for v in (75, 203)]
    assert f"{g4[0]}×{g4[1]} = {g4[0] * g4[1]}" in answers and f"{g7[0]}×{g7[1]} = {g7[0] * g7[1]}" in answers
