"""Sphinx configuration of the trio-things documentation (``make docs``).

The pages are Markdown, read by MyST: prose and examples, checked against the code by
the tests where they run (the README, the quick start, the testing page). The API
reference (``api.md``) is generated from the docstrings by autodoc, so the docs build
imports ``trio_things``: a docstring whose markup breaks fails ``make docs`` (warnings
are errors), as a broken page would.
"""

project = "trio-things"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# docs/examples holds runnable .py/.toml examples, not pages.
exclude_patterns = ["_build", "examples"]

# Give h1-h3 headings anchors, so pages can link to sections: [limits](http.md#limits).
myst_heading_anchors = 3

# The API reference: members in the order the source declares them, types in the
# descriptions (signatures stay short enough to read), Google-style sections
# ("Returns:", "Raises:") as the docstrings write them.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "trio-things"
html_static_path = ["_static"]
html_css_files = ["wrap.css"]
