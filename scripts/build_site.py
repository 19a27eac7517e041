"""Build the course as a static HTML site from the notebooks' stored outputs (nothing is executed).

    python scripts/build_site.py                 # writes site/ (open site/index.html)
    python scripts/build_site.py --out DIR

One page per notebook (notebooks/NN_*.ipynb) and per exercise version (notebooks/exercises/), made
by nbconvert's HTMLExporter with the template in scripts/site_template/course (JupyterLab's "lab"
look); a contents page in course order; each page links to the contents, the previous and next
notebook, its exercise (or full) version and its .ipynb, copied into the site. Figures are embedded
in the pages. Equations are typeset by MathJax 2, copied from the jupyter-server-mathjax package
into _static/mathjax: the site needs no network. Sliders need a kernel, so each ipywidgets output
is replaced by the picture and readouts its stored widget state holds, with a note on how to run
it live.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "site_template"
# How to run a notebook live, as the site says it (docs/site.md; tests/test_extras.py runs these commands)
RUN_LIVE = ('in a clone of the repository, <code>python3.11 -m venv .venv &amp;&amp; .venv/bin/pip install -e ".[course]"</code> '
            "(JupyterLab, the kernel and ipywidgets), then <code>.venv/bin/jupyter lab --allow-root notebooks/{notebook}</code> "
            "(<code>--allow-root</code> matters only as root)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SLIDERS = {"IntSliderModel", "FloatSliderModel", "SelectionSliderModel", "IntRangeSliderModel",
           "FloatRangeSliderModel", "FloatLogSliderModel"}


@dataclass(frozen=True)
class Page:
    notebook: Path  # the source .ipynb
    href: str  # the page, relative to the site root
    title: str  # the notebook's first heading

    @property
    def ipynb_href(self) -> str:
        return "ipynb/" + self.notebook.relative_to(ROOT / "notebooks").as_posix()


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError("every course notebook starts with a '# NN · Title' heading")


def course_pages(notebooks: Path = ROOT / "notebooks") -> tuple[list[Page], dict[str, Page]]:
    """The notebooks in course order (their NN_ prefix) and, by file name, their exercise versions."""
    def page(path: Path, href: str) -> Page:
        return Page(path, href, _title(nbformat.read(path, as_version=4)))

    course = [page(p, p.with_suffix(".html").name) for p in sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))]
    exercises = {p.name: page(p, "exercises/" + p.with_suffix(".html").name)
                 for p in sorted((notebooks / "exercises").glob("[0-9][0-9]_*.ipynb"))}
    return course, exercises


# --- widgets: the stored state, drawn without a kernel ---------------------------------------------

def _static_widget(model_id: str, state: dict, notebook: str) -> str:
    """HTML for one widget view: its sliders' stored values, HTML readouts and images, in order,
    and a note on how to move the sliders live."""
    parts: list[str] = []

    def walk(mid: str) -> None:
        entry = state.get(mid)
        if entry is None:
            return
        name, st = entry["model_name"], entry["state"]
        if name in SLIDERS:
            value = st.get("value", st.get("index"))
            if name == "SelectionSliderModel":
                value = st["_options_labels"][st["index"]]
            parts.append(f'<span class="slider">{html.escape(st.get("description", ""))} = '
                         f"{html.escape(str(value))}</span>")
        elif name == "HTMLModel":
            parts.append(f'<div class="readout">{st.get("value", "")}</div>')
        elif name == "ImageModel":
            for buf in entry.get("buffers", []):
                if buf.get("path") == ["value"]:
                    data = buf["data"] if buf.get("encoding") == "base64" else base64.b64encode(buf["data"]).decode()
                    parts.append(f'<img alt="stored widget image" src="data:image/{st.get("format", "png")};'
                                 f'base64,{data}">')
        for child in st.get("children", []):
            walk(child.removeprefix("IPY_MODEL_"))

    walk(model_id)
    sliders = " &middot; ".join(p for p in parts if p.startswith('<span class="slider">'))
    rest = "".join(p for p in parts if not p.startswith('<span class="slider">'))
    return (f'<div class="static-widget"><div class="controls">{sliders}</div>{rest}'
            f'<div class="note">Interactive in Jupyter: this is the picture the stored run shows, at the '
            f"slider values above. To move the sliders, run the notebook with a kernel: "
            f"{RUN_LIVE.format(notebook=notebook)} and <em>Run &rsaquo; Run All Cells</em>.</div></div>")


def _freeze_widgets(nb, notebook: str) -> int:
    """Replace every widget output by its static drawing (sliders) or its text (progress bars);
    drop the widget state, so the page loads no widget manager. Returns how many were replaced."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            view = data.pop(WIDGET_VIEW)
            models = _descendants(view["model_id"], state)
            if models & SLIDERS:
                out["data"] = {"text/html": _static_widget(view["model_id"], state, notebook)}
            replaced += 1
    return replaced


def _descendants(model_id: str, state: dict) -> set[str]:
    entry = state.get(model_id)
    if entry is None:
        return set()
    names = {entry["model_name"]}
    for child in entry["state"].get("children", []):
        names |= _descendants(child.removeprefix("IPY_MODEL_"), state)
    return names


# --- pages -----------------------------------------------------------------------------------------

_IPYNB_HREF = re.compile(r'href="(?:\./)?(?P<dir>exercises/)?(?P<name>[0-9][0-9]_[A-Za-z0-9_]+)\.ipynb(?P<anchor>#[^"]*)?"')


def _link_notebooks(body: str, root: str) -> str:
    """Links between notebooks (``03_x.ipynb``, ``exercises/03_x.ipynb``) point to their pages."""
    return _IPYNB_HREF.sub(lambda m: f'href="{root}{m["dir"] or ""}{m["name"]}.html{m["anchor"] or ""}"', body)


def _write_page(exporter: HTMLExporter, page: Page, site: dict, out: Path) -> int:
    nb = nbformat.read(page.notebook, as_version=4)
    widgets = _freeze_widgets(nb, page.notebook.relative_to(ROOT / "notebooks").as_posix())
    nb.metadata["title"] = page.title
    body, _ = exporter.from_notebook_node(nb, resources={"site": site})
    target = out / page.href
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_link_notebooks(body, site["root"]), encoding="utf-8")
    return widgets


def _contents(course: list[Page], exercises: dict[str, Page]) -> str:
    rows = []
    for page in course:
        ex = exercises.get(page.notebook.name)
        extra = f' · <a href="{ex.href}">exercise version</a>' if ex else ""
        rows.append(f'<li><a href="{page.href}">{html.escape(page.title)}</a>{extra}'
                    f' · <a href="{page.ipynb_href}">.ipynb</a></li>')
    items = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>segformer-lite: the course</title>
<link rel="icon" href="data:,">
<style>
  body {{ font-family: sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; line-height: 1.5; }}
  li {{ margin: 0.3em 0; }}
</style>
</head>
<body>
<h1>segformer-lite: the course</h1>
<p>SegFormer's encoder, the Mix Transformer, built from scratch in PyTorch, one notebook at a time.
These pages show each notebook with the outputs stored in the repository; nothing here runs code.
The exercise versions leave the code for you to write and check.</p>
<ol start="0">
{items}
</ol>
<p>To run the notebooks (and move their sliders): {RUN_LIVE.format(notebook="")}.</p>
</body>
</html>
"""


def build(out: Path, notebooks: Path = ROOT / "notebooks") -> dict:
    """Write the site into ``out`` (emptied first). Returns counts for the log and the tests."""
    import jupyter_server_mathjax

    start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", out / "_static" / "mathjax")
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="course")
    course, exercises = course_pages(notebooks)
    widgets = 0
    for i, page in enumerate(course):
        ex = exercises.get(page.notebook.name)
        links = ([{"href": ex.href, "title": "Exercise version"}] if ex else []) + \
                [{"href": page.ipynb_href, "title": "Download .ipynb"}]
        site = {"root": "", "links": links,
                "prev": course[i - 1] if i > 0 else None, "next": course[i + 1] if i + 1 < len(course) else None}
        widgets += _write_page(exporter, page, site, out)
    by_name = {p.notebook.name: p for p in course}
    for name, page in exercises.items():
        full = by_name[name]
        site = {"root": "../", "prev": None, "next": None,
                "links": [{"href": "../" + full.href, "title": "Full version (with solutions)"},
                          {"href": "../" + page.ipynb_href, "title": "Download exercise .ipynb"}]}
        _write_page(exporter, page, site, out)
    for page in course + list(exercises.values()):
        target = out / page.ipynb_href
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(page.notebook, target)
    (out / "index.html").write_text(_contents(course, exercises), encoding="utf-8")
    return {"pages": len(course) + len(exercises), "course": len(course), "exercises": len(exercises),
            "widgets": widgets, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "site", help="output directory (default: site/)")
    args = parser.parse_args(argv)
    stats = build(args.out)
    print(f"{args.out}: {stats['pages']} pages ({stats['course']} notebooks, {stats['exercises']} exercise "
          f"versions), {stats['widgets']} widget outputs drawn from their stored state, in {stats['seconds']:.1f} s; "
          f"open {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
