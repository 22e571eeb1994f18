"""Docstrings -> TD descriptions: the reStructuredText markup turned into plain text.

Python docstrings are written for Sphinx (``ramp to ``to`` degrees``,
``:class:`~trio_things.demo.Reading```), but a TD ``description`` is read by people in
generic WoT tools and dashboards that show it as it is. So the inline markup is turned
into what a Markdown reader (and a plain-text one) shows well: inline literals and
cross-references become ``code`` in single backticks, a role's target is shortened as
Sphinx would show it. Paragraphs, lists and emphasis are left as written, since
Markdown reads them alike.
"""

from __future__ import annotations

import inspect
import re
from typing import Final

__all__ = ["description_from_docstring"]

#: ``:role:`target``` or ``:domain:role:`target```.
_ROLE: Final = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")
#: ``Text <target>`` inside a role.
_TITLED: Final = re.compile(r"^(.*?)\s*<[^>]*>$", re.DOTALL)
#: ````literal````.
_LITERAL: Final = re.compile(r"``(.+?)``", re.DOTALL)


def _role_text(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    titled = _TITLED.match(target)
    if titled:
        return f"`{titled.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    elif target.startswith("!"):
        target = target[1:]
    return f"`{target}`"


def description_from_docstring(doc: str | None) -> str | None:
    """``doc`` with its indentation cleaned (as :func:`inspect.cleandoc` does) and its
    inline reST markup made plain; None for a missing or blank docstring.

    >>> description_from_docstring("Move to ``to`` and emit :class:`~demo.Reading`.")
    'Move to `to` and emit `Reading`.'
    """
    if not doc:
        return None
    text = inspect.cleandoc(doc).strip()
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"`\1`", text)
    return text or None
