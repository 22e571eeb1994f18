"""Sphinx configuration of the trio-things documentation (``make docs``).

The pages are Markdown, read by MyST. They never import ``trio_things``: every page is
prose and examples checked against the code by hand, so building the docs needs only
Sphinx and myst-parser, and cannot fail because the package is mid-change.
"""

project = "trio-things"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# docs/examples holds runnable .py/.toml examples, not pages.
exclude_patterns = ["_build", "examples"]

# Give h1-h3 headings anchors, so pages can link to sections: [limits](http.md#limits).
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "trio-things"
