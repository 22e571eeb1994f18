"""Sections of ``docs/benchmarks.md`` that other benchmarks than the fan-out own.

The fan-out benchmark (``benchmarks.fanout``) writes the page from its own records;
another benchmark (``benchmarks.mjpeg --write``) keeps a section of its own on the same
page, between two marker comments, and the fan-out benchmark carries such sections over
when it writes the page again. So one page holds every figure, and each benchmark
rewrites only what it measured.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["carry_sections", "replace_section"]

_SECTION: Final = re.compile(
    r"<!-- section: (?P<name>[a-z0-9-]+) -->\n.*?<!-- end of section: (?P=name) -->\n",
    re.DOTALL)


def _block(name: str, body: str) -> str:
    return (f"<!-- section: {name} -->\n{body.rstrip()}\n"
            f"<!-- end of section: {name} -->\n")


def replace_section(page: str, name: str, body: str) -> str:
    """``page`` with section ``name`` holding ``body`` (appended if it had none)."""
    for match in _SECTION.finditer(page):
        if match.group("name") == name:
            return page[:match.start()] + _block(name, body) + page[match.end():]
    return page.rstrip("\n") + "\n\n" + _block(name, body)


def carry_sections(old: str, new: str) -> str:
    """``new`` with every section of ``old`` that ``new`` lacks appended, as it was."""
    present = {match.group("name") for match in _SECTION.finditer(new)}
    for match in _SECTION.finditer(old):
        if match.group("name") not in present:
            new = new.rstrip("\n") + "\n\n" + match.group(0)
    return new
