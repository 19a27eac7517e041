"""Checkers for the course's exercises: run the learner's module beside the package's and say
what is wrong, not just that something is.

Each ``check_<exercise>(Student)`` builds the learner's module and the package's reference with
the same constructor arguments, copies the reference's weights into the learner's, and compares
outputs on fresh random inputs of several shapes: batches of 2, square and non-square grids,
every sr_ratio the hidden tests use, and the error contract where the exercise has one. A
checker tries at least everything its notebook's hidden tests grade, at a tolerance no looser,
so its check mark means full marks (``tests/test_checks.py`` runs every planted student through
both and requires that they agree). Three outcomes:

* right: prints one line starting with ``✓`` and returns ``None``;
* unfinished (``forward`` raises ``NotImplementedError``): prints "... not implemented yet" to
  **stderr** and returns ``None``. The notebook keeps running top to bottom, and nbgrader, which
  scores a graded cell zero when it writes to stderr, gives the exercise no points;
* wrong: raises ``AssertionError`` whose message names the likely mistake and its fix.

The diagnosis is empirical: each exercise has a catalogue of classic mistakes (``MISTAKES``),
each one re-implemented here as a "planted variant" that runs on the reference's weights. When
the learner's output differs from the reference (or their code raises), the variant whose output
(or error) it reproduces names the mistake; failing that, a batch size hard-coded to 1 (right on
the first image alone) or a grid guessed as sqrt(N) (right on square grids only). Before any of
that, the settings of the layers built in ``__init__`` (padding, groups, kernel and stride, eps)
are compared with the reference's, and an input tensor changed in place fails. The variants are
plain ``torch`` code, written independently of the package.

Modules: ``mistakes`` (the catalogue), ``variants`` (the planted variants), ``harness`` (build,
call, compare, name the mistake) and ``checkers`` (the ``check_*`` functions, re-exported here).
"""
from .checkers import (check_all_mlp_decoder, check_block, check_efficient_self_attention, check_image_to_tokens, check_mix_ffn,
                       check_mix_transformer, check_overlap_patch_embed, check_stage, check_tokens,
                       check_tokens_to_image)
from .mistakes import MISTAKES, Mistake

__all__ = ["MISTAKES", "Mistake", "check_overlap_patch_embed", "check_image_to_tokens",
           "check_tokens_to_image", "check_tokens", "check_efficient_self_attention",
           "check_mix_ffn", "check_block", "check_stage", "check_mix_transformer", "check_all_mlp_decoder"]
from .counting import COUNTING_MISTAKES, check_count_attention  # noqa: E402  (notebook 00's exercise)
__all__ += ["COUNTING_MISTAKES", "check_count_attention"]
