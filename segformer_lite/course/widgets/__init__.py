"""Interactive views for the course (import the submodule you need, e.g.
``segformer_lite.course.widgets.patch_grid``). Every widget follows one pattern:

* pure functions compute (``patch_grid``, ``attention_for_query`` ...) and draw on a matplotlib
  ``Axes`` (``draw_patch_grid``, ``draw_attention``); notebooks and the README figures call them
  directly;
* a thin wrapper, a subclass of ``_render.SliderView`` returned by ``patch_grid_widget(...)`` /
  ``attention_widget(...)``, wires ipywidgets sliders to them. Every wrapper has the same
  attributes: ``controls`` (slider name -> slider), ``message`` (an ``HTML`` line), ``image`` (an
  ``Image`` with the PNG), ``shown`` (what the picture shows: a ``PatchGrid``, an ``AttentionMap``),
  ``box`` (the ``VBox`` displayed) and ``update()``. Tests drive it headless by setting
  ``w.controls[name].value``;
* ``_render.figure_png`` is the one figure -> PNG bytes step.
"""
