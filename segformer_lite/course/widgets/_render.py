"""What the course widgets share: a figure turned into PNG bytes, and the one wrapper shape
(:class:`SliderView`) that wires sliders to a pure drawing function."""
from __future__ import annotations

import html
import io

__all__ = ["figure_png", "SliderView"]


def figure_png(fig) -> bytes:
    """``fig`` laid out tightly and saved as PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class SliderView:
    """Rows of sliders above a one-line message and a picture; moving a slider redraws.

    Subclasses define ``draw(ax, **values) -> (shown, message_html)``: ``values`` are the
    sliders' values by name, ``shown`` what was drawn (kept as ``.shown``). A ValueError from
    ``draw`` is reported in the message and the last picture stays.

    Attributes for code and tests: ``controls`` (name -> slider, in display order), ``message``
    (``ipywidgets.HTML``), ``image`` (``ipywidgets.Image`` holding the PNG), ``shown`` and ``box``
    (the ``VBox`` a notebook shows; the view itself displays as that box).
    """

    def __init__(self, rows: list[dict], figsize: tuple[float, float], dpi: int = 80):
        import ipywidgets as widgets

        self.controls = {name: slider for row in rows for name, slider in row.items()}
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.shown = None
        self.figsize, self.dpi = figsize, dpi
        self.box = widgets.VBox([widgets.HBox(list(row.values())) for row in rows] + [self.message, self.image])
        for slider in self.controls.values():
            slider.observe(self.update, names="value")
        self.update()

    def draw(self, ax, **values):
        """Draw on ``ax`` for these slider values; return ``(shown, message_html)``."""
        raise NotImplementedError

    def update(self, change=None):
        """Redraw for the sliders' current values (called whenever one moves); returns ``shown``."""
        from matplotlib.figure import Figure  # a bare Figure, not pyplot's: no global state, any backend

        fig = Figure(figsize=self.figsize, dpi=self.dpi)
        try:
            shown, message = self.draw(fig.add_subplot(), **{n: s.value for n, s in self.controls.items()})
        except ValueError as e:  # e.g. a window larger than the grid: say so, keep the last picture
            self.message.value = f"<b>cannot draw:</b> {html.escape(str(e))}"
            return self.shown
        self.image.value = figure_png(fig)
        self.shown, self.message.value = shown, message
        return shown

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)
