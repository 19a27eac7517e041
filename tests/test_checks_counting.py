"""Notebook 00's exercise checker, ``check_count_attention``: a right count passes, every
catalogued mistake is named (alone and combined), malformed answers are explained, and the checker
agrees with the notebook's hidden tests on every planted variant (a check mark means full marks)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import segformer_lite as sl
from segformer_lite.course.checks import COUNTING_MISTAKES, check_count_attention
from segformer_lite.course.checks.counting import CASES, planted_count

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_why_efficient_attention.ipynb"


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


@pytest.mark.parametrize("mistake", sorted(COUNTING_MISTAKES))
def test_each_mistake_is_named(mistake):
    with pytest.raises(AssertionError) as e:
        check_count_attention(planted_count((mistake,)))
    message = str(e.value)
    assert f"Likely mistake: {COUNTING_MISTAKES[mistake].title}." in message, message
    assert COUNTING_MISTAKES[mistake].fix in message
    assert message.count("Likely mistake:") == 1, message


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
            "the article": the_article,
            **{m: planted_count((m,)) for m in COUNTING_MISTAKES},
            "no padding + no heads": planted_count(("count_no_padding", "count_no_heads"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_checker_and_hidden_tests_agree(name):
    fn = VARIANTS[name]
    checker, hidden = passes_checker(fn), passes_hidden_tests(fn)
    assert checker == hidden, f"{name}: checker {'passes' if checker else 'fails'}, hidden tests {'pass' if hidden else 'fail'}"
    assert checker == name.startswith("right"), name
