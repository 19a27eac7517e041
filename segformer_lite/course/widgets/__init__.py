"""Interactive views for the course: pure functions that compute and draw, and thin ipywidgets
wrappers around them (import the submodule you need, e.g. ``segformer_lite.course.widgets.patch_grid``).
"""
