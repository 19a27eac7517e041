"""Homework asks before it tells: in the student version of every exercise notebook, no cell above
an exercise's graded cell hands over the decisions that cell grades, and every prompt for a
prediction or an answer has a cell to write it in, empty in the student version.

``DECISIONS`` lists, beside the checkers' mistake catalogue (``segformer_lite.course.checks``),
the tokens of the decisions each exercise grades, as regexes that tolerate spacing. Where a
decision rests on a fact nobody can derive (an eps), the notebook states the fact and its source in
prose; the tokens here catch the line of code that would hand the decision over.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from segformer_lite.course import homework

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISES = homework.exercises_dir(NOTEBOOKS)

# graded cell's grade_id -> {the decision: a regex for its token}
DECISIONS: dict[str, dict[str, str]] = {
    # notebook 00: how each conv rounds and what the scores multiply. The facts are given above the
    # graded cell (the patch conv pads by patch_size // 2, the reduction conv has kernel = stride =
    # sr and no padding, the conv output-size formula); the roundings they lead to are not
    "check_count_attention": {
        "the patch grid rounded up": r"⌈|\bceil\b|\brounds?\s+up|\brounded\s+up",
        "the keys rounded down per side": r"⌊\s*H'?\s*/\s*sr\s*⌋|//\s*sr_ratio|\brounded down|\brounds? down"
                                          r"|partial window|do not fit whole",
        "the score matrix N × M": r"\bN\s*[×x·*]\s*M\b",
        "the scores of all heads": r"num_heads\s*[·*]\s*N\s*[·*]\s*M",
    },
    # the eps is a stated fact (the skeleton takes it, its default the released code's); what is graded
    # is that the norm is built with it, a line no cell above the graded one may show
    "check_overlap_patch_embed": {  # notebook 01: the conv's padding and the norm built with its eps
        "the padding rule k // 2": r"\b(k|patch_size)\s*//\s*2",
        "the padding in code": r"padding\s*=\s*(k|patch_size)\b",
        "the padding rule (k - 1)/2": r"\(\s*k\s*[−-]\s*1\s*\)\s*/\s*2",
        "the window's reach as the padding": r"reach\w*\s*`?\(\s*k",
        "the padding equation": r"n\s*\+\s*2\s*p\s*[−-]\s*k\s*=\s*n\s*[−-]\s*1",
        "the norm built with its eps in code": r"LayerNorm\([^)\n]*eps",
    },
    "check_efficient_self_attention": {  # notebook 03: the scale, the reduction conv, its norm
        "the per-head scale": r"\*\*\s*-\s*0?\.5",
        "head_dim": r"head_dim",
        "d_head as dim // num_heads": r"\bdim\s*//\s*num_heads",
        "d is d_head": r"`d`\s+is\s+\$?d_\{?head",
        "the reduction conv's kernel": r"kernel_size\s*=\s*(sr_ratio|sr|demo_sr)\b",
        "the reduction conv's stride": r"stride\s*=\s*(sr_ratio|sr|demo_sr)\b",
        "kernel = stride = sr": r"kernel\s*=\s*stride",
        "the norm built with its eps in code": r"LayerNorm\([^)\n]*eps",
        "the heads merged back": r"split\.split\(|b h n d\s*->\s*b n \(h d\)",
        "the softmax's axis": r"softmax[^.\n]{0,40}over the \*\*keys\*\*|\(the last\s+axis\)|softmax\(dim\s*=\s*-1\)",
    },
    "check_mix_ffn": {  # notebook 04: the depthwise conv and the GELU
        "depthwise groups": r"groups\s*=\s*(hidden|hidden_dim|channels|C)\b",
        "the padding of a 3x3 conv": r"padding\s*=\s*1\b",
        "the GELU form": r"approximate\s*=",
    },
    "check_block": {  # notebook 04: the norms' eps, the hidden width, where the norms sit
        "pre-norm": r"pre-?norm",
        "the norm inside the attention branch": r"attn\(\s*(self\.)?norm1\(",
        "the norm inside the Mix-FFN branch": r"ffn\(\s*(self\.)?norm2\(",
        "the block norms' eps in code": r"LayerNorm\([^)\n]*eps",
        "the hidden width": r"\bdim\s*\*\s*mlp_ratio|mlp_ratio\s*\*\s*dim\b|mlp_ratio`?\s+times\s+the",
    },
    "check_all_mlp_decoder": {  # notebook 06: the upsampling and the concatenation order
        "align_corners=False": r"align_corners\s*=\s*False",
        "the upsampling size": r"size\s*=\s*(feats|f)\[0\]|feats\[0\]\.shape",
        "deepest first": r"\[\s*_?c4\s*,\s*_?c3|(ups|upsampled|projected)\[::-1\]|deepest[ -]first|reversed\(",
        "the fuse block's order": r"relu\(\s*(self\.|head\.)?norm\(\s*(self\.|head\.)?fuse",
    },
    # notebook 02: how the axes move, each way, and the refusal of a grid that does not fit. The contract
    # states the layouts (row-major tokens, channels first, the grid as ints) and that a ValueError gives
    # the sizes; the recipes, the package's refusal and "the fix" come after the graded cell
    "check_tokens": {
        "flatten the grid": r"flatten\(\s*(start_dim\s*=\s*)?2\s*[,)]",
        "channels last by a transpose": r"transpose\(\s*1\s*,\s*2\s*\)",
        "the einops pattern to tokens": r"b c h w\s*->\s*b \(h w\) c",
        "the einops pattern back": r"b \(h w\) c\s*->\s*b c h w",
        "transpose back first, then reshape": r"transpose back first",
        "the check of the grid in code": r"\bif\s[^\n#]*!=[^\n]*:\s*\n\s*raise ValueError",
        "the refusal's message in code": r"raise ValueError\(\s*f[\"']",
        "the package's finished functions called (their answer, their refusal)": r"sl\.(image_to_tokens|tokens_to_image)\(",
    },
    "check_mix_transformer": {  # notebook 05: what the stage loop chains and in which form
        "in_dims: the image's channels, then the previous stage's width":
            r"embed_dims\[\s*:\s*-1\s*\]|embed_dims\[\s*i\s*-\s*1\s*\]|in_chans\s*=\s*embed_dims\[",
        "the next stage reads the previous stage's map":
            r"next stage[^.\n]*\bread|previous stage's (width|output|feature map|map)",
        "the grid taken from the patch embedding": r"\bx\s*,\s*(hw|H\s*,\s*W)\s*=\s*(stage\.|self\.)?patch_embed",
        "the stage's LayerNorm after its blocks":
            r"\bnorm\d?\(\s*x\s*\)|final LayerNorm|blocks\s*(->|→)\s*(a\s+)?LayerNorm|\bnormalise,",
        "tokens back to a (B, C, H, W) map":
            r"tokens_to_image\(|b\s*\(h\s*w\)\s*c\s*->\s*b\s*c\s*h\s*w|reshape\(\s*B\s*,\s*H\s*,\s*W|back to an? (image|map)",
        "the whole recipe, drawn": r"encoder_diagram",
    },
}

PROMPTS = re.compile(r"Predict, then run|Check your understanding")
ANSWER = "YOUR ANSWER HERE"  # what nbgrader's generate_assignment leaves in a manually graded answer cell


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def graded_cells(folder: Path) -> dict[str, tuple[Path, int]]:
    """grade_id -> (notebook, index) of every graded code cell (a checker call) in ``folder``."""
    found = {}
    for path in sorted(folder.glob("*.ipynb")):
        for i, c in enumerate(cells(path)):
            meta = c.get("metadata", {}).get("nbgrader", {})
            if c["cell_type"] == "code" and meta.get("grade"):
                found[meta["grade_id"]] = (path, i)
    return found


def revealed(cells_above: list[dict], decisions: dict[str, str]) -> list[str]:
    """Each (cell, decision, matched text) among ``cells_above`` that matches a decision's token."""
    return [f"cell {i}: {name}: {m.group(0)!r}" for i, c in enumerate(cells_above)
            for name, token in decisions.items() for m in re.finditer(token, text(c), re.IGNORECASE)]


NOT_YET: set[str] = set()  # an exercise whose notebook does not yet ask before it tells (none left)
ANSWERED = ["00_why_efficient_attention.ipynb", "01_overlapping_patch_embedding.ipynb", "02_tokens.ipynb",
            "03_efficient_self_attention.ipynb", "04_mix_ffn_and_block.ipynb", "05_mix_transformer_encoder.ipynb",
            "06_all_mlp_decoder.ipynb"]


def test_every_exercise_lists_its_decisions():
    # 07's and 08's graded cells grade predictions, not code: tests/test_homework.py's and
    # tests/test_experiments.py's ask-before-tell tests check those notebooks
    code_exercises = {e for e, (path, _) in graded_cells(EXERCISES).items() if not path.name.startswith(("07", "08"))}
    assert code_exercises - NOT_YET == set(DECISIONS)


@pytest.mark.parametrize("exercise", sorted(DECISIONS))
def test_no_decision_is_revealed_above_its_graded_cell(exercise):
    path, index = graded_cells(EXERCISES)[exercise]
    found = revealed(cells(path)[:index], DECISIONS[exercise])
    assert not found, f"{path.name}, above the graded cell {exercise} (cell {index}):\n  " + "\n  ".join(found)


@pytest.mark.parametrize("exercise", sorted(DECISIONS))
def test_every_decision_token_matches_the_course_version(exercise):
    """The tokens are not dead: each one matches the course notebook's solution or its reveal below
    the graded cell, so the test above would fail if that text moved above it."""
    path, _ = graded_cells(NOTEBOOKS)[exercise]
    course = cells(path)
    for name, token in DECISIONS[exercise].items():
        assert any(re.search(token, text(c), re.IGNORECASE) for c in course), f"{path.name}: {name} ({token}) matches nothing"


def test_the_check_fails_on_a_planted_reveal():
    """The released line of notebook 06 above its graded cell is found."""
    above = [{"source": ['ups.append(F.interpolate(x, size=size, mode="bilinear", align_corners = False))\n',
                         "x = torch.cat(ups[::-1], dim=1)\n"]}]
    found = revealed(above, DECISIONS["check_all_mlp_decoder"])
    assert any("align_corners=False" in f for f in found) and any("deepest first" in f for f in found), found


@pytest.mark.parametrize("name", ANSWERED)
def test_every_prompt_has_an_empty_answer_cell_in_the_student_version(name):
    path = EXERCISES / name
    nb = cells(path)
    assert not any("<details>" in text(c) for c in nb), f"{path.name}: an answer block is left in"
    for i, c in enumerate(nb):
        if c["cell_type"] == "markdown" and PROMPTS.search(text(c)):
            # the answer cell follows the prompt, or the one code cell that answers it
            following = nb[i + 1:i + 3]
            answers = [a for a in following if a["cell_type"] == "markdown" and grade_id(a)]
            assert answers, f"{path.name} cell {i}: no answer cell after the prompt {text(c)[:60]!r}"
            assert ANSWER in text(answers[0]) and "BEGIN SOLUTION" not in text(answers[0]), \
                f"{path.name} cell {i + 1}: the student version's answer cell is not empty"


@pytest.mark.parametrize("name", ANSWERED)
def test_the_course_version_keeps_the_answers_in_manually_graded_cells(name):
    path = NOTEBOOKS / name
    nb = cells(path)
    answer_cells = [c for c in nb if c["cell_type"] == "markdown" and grade_id(c)]
    assert answer_cells, path.name
    for c in answer_cells:
        meta = c["metadata"]["nbgrader"]
        assert meta["solution"] and meta["grade"] and meta["points"] > 0, (path.name, meta)
        assert re.fullmatch(r"### BEGIN SOLUTION\n.+\n### END SOLUTION", text(c), re.S), (path.name, meta["grade_id"])


@pytest.mark.parametrize("name", sorted(p.name for p in EXERCISES.glob("*.ipynb")))
def test_no_student_version_stores_widget_state(name):
    """nbgrader clears outputs, not the widget state an executed notebook keeps in its metadata
    (a progress bar's last loss, an attention readout): the student versions must not carry it."""
    assert "widgets" not in json.loads((EXERCISES / name).read_text(encoding="utf-8"))["metadata"]
