"""The static course site (scripts/build_site.py), built into a temporary folder and read in Chromium.

Every page loads with no console error and no failed request, every image is decoded, every link
inside the site reaches a file (and its #anchor, an element), every equation is typeset by the
site's own MathJax (no raw ``$$`` left), and there is one page per notebook and per exercise
version, in course order on the contents page. The site is served from 127.0.0.1 and Chromium is
offline except for it, so anything fetched from elsewhere (a CDN) fails the test.
"""

import functools
import http.server
import importlib.util
import re
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import nbformat
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted((REPO / "notebooks" / "exercises").glob("[0-9][0-9]_*.ipynb"))
PAGES = ([nb.with_suffix(".html").name for nb in NOTEBOOKS]
         + [f"exercises/{nb.with_suffix('.html').name}" for nb in EXERCISES])
SOURCES = dict(zip(PAGES, NOTEBOOKS + EXERCISES))
MATHJAX_TIMEOUT_MS = 60_000  # typesetting took under 3 s per page when measured; generous for a loaded machine


def _build_module():
    spec = importlib.util.spec_from_file_location("build_site", REPO / "scripts" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    stats = _build_module().build(out)
    print(f"\nsite built in {stats['seconds']:.1f} s: {stats['pages']} pages")
    return out


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on 127.0.0.1 (a free port), as a learner's ``python -m http.server`` would."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def tab(browser, server):
    """A tab that may reach the site and nothing else; it records console errors, page errors and
    failed requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(30_000)
    context.route(re.compile(r"^(?!" + re.escape(server) + ").*"), lambda route: route.abort())
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        yield page, problems
    finally:
        context.close()


def _markdown(path):
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def test_one_page_per_notebook(site):
    built = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if not p.relative_to(site).as_posix().startswith("_static/"))
    assert built == sorted(PAGES + ["index.html"])
    assert len(NOTEBOOKS) == 9 and len(EXERCISES) == 9  # every notebook has a student version


def test_contents_lists_the_course_in_order(tab, server):
    page, problems = tab
    page.goto(server + "index.html")
    hrefs = page.eval_on_selector_all("ol > li > a:first-child", "as => as.map(a => a.getAttribute('href'))")
    titles = page.eval_on_selector_all("ol > li > a:first-child", "as => as.map(a => a.textContent)")
    assert hrefs == [nb.with_suffix(".html").name for nb in NOTEBOOKS]
    assert titles == [_markdown(nb).splitlines()[0].removeprefix("# ") for nb in NOTEBOOKS]
    exercise_links = page.eval_on_selector_all("a", "as => as.filter(a => a.textContent === 'exercise version')"
                                                    ".map(a => a.getAttribute('href'))")
    assert exercise_links == [f"exercises/{nb.with_suffix('.html').name}" for nb in EXERCISES]
    assert problems == []


@pytest.mark.parametrize("name", PAGES)
def test_page(tab, server, name):
    page, problems = tab
    url = server + name
    page.goto(url, wait_until="load")
    source = SOURCES[name]
    markdown = _markdown(source)

    # equations: typeset by the local MathJax, none left as TeX
    page.wait_for_selector("body[data-mathjax='done']", timeout=MATHJAX_TIMEOUT_MS, state="attached")
    text = page.eval_on_selector_all(".jp-MarkdownCell", "cs => cs.map(c => c.innerText).join('\\n')")
    assert "$$" not in text
    displays, inline = markdown.count("$$") // 2, len(re.findall(r"(?<![$\\])\$(?!\$)", markdown)) // 2
    typeset = page.eval_on_selector_all(".MathJax_Display", "es => es.length")
    typeset_all = page.eval_on_selector_all("script[type^='math/tex']", "es => es.length")
    assert page.eval_on_selector_all(".MathJax_Error, merror", "es => es.length") == 0
    assert typeset >= displays, f"{typeset} displayed equations typeset, {displays} in the notebook"
    assert typeset_all >= displays + inline, f"{typeset_all} equations typeset, {displays + inline} in the notebook"

    # figures: every image decoded (stored outputs and the sliders' stored pictures)
    images = page.eval_on_selector_all("img", "is => is.map(i => [i.complete && i.naturalWidth > 0, i.src.slice(0, 60)])")
    broken = [src for ok, src in images if not ok]
    assert broken == []
    stored = sum(1 for c in nbformat.read(source, as_version=4).cells for o in c.get("outputs", [])
                 if {"image/png", "image/jpeg"} & set(o.get("data", {})))
    sliders = page.eval_on_selector_all(".static-widget img", "es => es.length")
    assert len(images) == stored + sliders, (len(images), stored, sliders)

    # links inside the site: the file exists, and its #anchor names an element there
    hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)")
    internal = sorted({h for h in hrefs if h.startswith(server)})
    assert any(h.endswith("/index.html") for h in internal)
    for href in internal:
        target, anchor = urldefrag(href)
        response = page.request.get(target)
        assert response.ok, f"{name}: link {href} -> HTTP {response.status}"
        if anchor:
            body = response.text() if target != url else page.content()
            assert f'id="{anchor}"' in body, f"{name}: link {href}: no element with id {anchor!r}"
    assert all(urlparse(h).scheme in ("http", "https", "mailto") for h in hrefs)

    # sliders: drawn from the stored state, with the note on running them live
    notes = page.eval_on_selector_all(".static-widget .note", "es => es.map(e => e.innerText)")
    assert all('pip install -e ".[course]"' in n and "jupyter lab --allow-root notebooks/" in n for n in notes)
    assert problems == [], problems

