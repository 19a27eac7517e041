"""Scaffolding that teaches SegFormer, not SegFormer itself; it may use the model and ``training/``.

checks/ and homework: the exercises' checkers and the nbgrader assignment; attention: attention
maps read out of a layer or an encoder; widgets/ and plots: the interactive pictures;
experiment_plots: notebook 08's figures; images: the course photos and figures; cost and trace:
FLOPs, memory and shape tables for the notebooks; measure: time and peak memory of a call;
regions: where a query lies inside a shape and where its attention lands (notebook 07).
"""
