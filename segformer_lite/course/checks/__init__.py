"""Checkers for the course's exercises: run the learner's module beside the package's and say
what is wrong, not just that something is.

Each ``check_<exercise>(Student)`` builds the learner's module and the package's reference with
the same constructor arguments, copies the reference's weights into the learner's, and compares
outputs on fresh random inputs of several shapes: batches of 2, square and non-square grids,
every sr_ratio the hidden tests use, and the error contract where the exercise has one. A
checker compares every property its notebook's hidden tests grade, at the same tolerance
(``harness.RTOL``, ``harness.ATOL``; exact where a reshape is graded), and calls the learner's
code with the same keywords, so its check mark means full marks. ``tests/test_checks.py`` runs
every planted student through both, ``tests/test_checks_contracts.py`` every student derived
from the notebook's solution by perturbing one compared property. The properties, per exercise
(each stated in the exercise's markdown or docstring):

* every tensor returned: a tensor, the reference's dtype, device and shape, its values;
* ``count_attention`` (00): a tuple of three Python ints;
* ``OverlapPatchEmbed`` (01), ``image_to_tokens`` (02): the tuple ``(tokens, grid)``, the grid a
  tuple of two Python ints (a ``torch.Size`` is one); built with ``patch_size=``, ``stride=``;
* ``tokens_to_image`` (02): exact values, and ``ValueError`` (or a subclass) for a grid that
  does not fit the tokens;
* ``EfficientSelfAttention`` (03): with ``return_attention=True`` the tuple ``(out, attn)``,
  both compared; built with ``num_heads=``, ``sr_ratio=``;
* ``Block`` (04): ``drop_path=``, eval and training mode; ``MixFFN`` (04), ``AllMLPDecoder``
  (06): the output tensor;
* ``MixTransformer`` (05): a list (not a tuple) of the four feature maps.

Three outcomes:

* right: prints one line starting with ``✓`` and returns ``None``;
* unfinished (``forward`` raises ``NotImplementedError``): prints "... not implemented yet" to
  **stderr** and returns ``None``. The notebook keeps running top to bottom, and nbgrader, which
  scores a graded cell zero when it writes to stderr, gives the exercise no points;
* wrong: raises ``AssertionError`` whose message names the likely mistake (the first time, what it
  is and why it is one; its fix when the same mistake comes back) and where the learner's module
  first parts from the reference, step by step (``localise``); in IPython and nbgrader's
  feedback the report comes without the checker's frames, and a crash shows the learner's own.

The diagnosis is empirical: each exercise has a catalogue of classic mistakes (``MISTAKES``),
each one re-implemented here as a "planted variant" that runs on the reference's weights. When
the learner's output differs from the reference (or their code raises), the variant whose output
(or error) it reproduces names the mistake; failing that, a batch size hard-coded to 1 (right on
the first image alone) or a grid guessed as sqrt(N) (right on square grids only). Before any of
that, the settings of the layers built in ``__init__`` (padding, groups, kernel and stride, eps)
are compared with the reference's, and an input tensor changed in place fails; before any value
is compared, the form of the output (``harness.vet``: container types and lengths, dtype,
device, ints) is, with a hint naming the property. The variants are plain ``torch`` code,
written independently of the package.

Modules: ``mistakes`` (the catalogue), ``variants`` (the planted variants), ``harness`` (call,
vet, compare, name the mistake), ``layers`` (build both modules; the layers built in ``__init__``
judged by what they compute), ``passes`` (the forward passes over the grids, the backward pass,
the float64 pass), ``localise`` (where a wrong answer parts from the reference), ``plans`` (what
the skeleton names, per exercise), ``cases`` (which cases of a check pass), ``report`` (the
failure report, the hints' state, the rendering of a failure) and the checkers: ``checkers``,
``tokens_check`` (notebook 02's helpers) and ``decoder_check`` (notebook 06's head), their
``check_*`` functions re-exported here.
``predictions`` grades predictions instead of code (notebook 07): a chosen option, a number or an
interval the learner commits to before a cell measures it (``check_prediction``, ``check_number``,
``check_interval``, re-exported here), and ``verdicts`` notebook 08's decisions. Unlike a wrong
module, a wrong prediction does not raise: its report (``✗`` and the measurement) goes to stderr,
which scores the cell zero, and the notebook runs on to the next measurement, so that no learner
has to edit a prediction to get past it.
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
from .predictions import (check_interval, check_number, check_prediction,  # noqa: E402
                          interval_verdict, which_bin)  # notebook 07's predictions
__all__ += ["check_prediction", "check_number", "check_interval", "interval_verdict", "which_bin"]
from .verdicts import check_paired_interval, check_predictions, check_sr_budget  # noqa: E402  (notebook 08's exercises)
__all__ += ["check_predictions", "check_paired_interval", "check_sr_budget"]
