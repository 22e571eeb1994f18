"""Docstrings become TD descriptions without their reST markup."""

from __future__ import annotations

import pytest

import trio_things as tt
from trio_things.model.docstrings import description_from_docstring


@pytest.mark.parametrize(("doc", "description"), [
    ("Move to ``to`` at ``rate``.", "Move to `to` at `rate`."),
    ("Emits :class:`~trio_things.demo.Reading`.", "Emits `Reading`."),
    ("See :meth:`Outbox.put` and :py:func:`trio.run`.", "See `Outbox.put` and `trio.run`."),
    ("Raises :exc:`!ValueError`.", "Raises `ValueError`."),
    ("Read :doc:`the guide <quickstart>`.", "Read `the guide`."),
    ("Plain *emphasis* and `one tick` stay.", "Plain *emphasis* and `one tick` stay."),
    ("\n    Indented.\n\n    Second ``paragraph``.\n    ", "Indented.\n\nSecond `paragraph`."),
    ("", None),
    (None, None),
    ("   \n  ", None),
])
def test_markup_becomes_plain(doc: str | None, description: str | None) -> None:
    assert description_from_docstring(doc) == description


def test_every_docstring_of_a_thing_reaches_the_td_plain() -> None:
    """The class, a data property (the docstring below it), a getter, an action."""

    class Stage(tt.Thing):
        """A stage; see :class:`~x.Stage`."""

        speed: float = tt.property(default=1.0)
        """Set by ``move``."""

        @tt.property
        def position(self) -> float:
            """Read from :attr:`speed`."""
            return 0.0

        @tt.action
        def move(self, to: float) -> None:
            """Go to ``to``."""

    from trio_things.model.description import describe_thing
    td = describe_thing(Stage.affordances, name="stage", title="Stage",
                        description=description_from_docstring(Stage.__doc__),
                        base="http://h/", bindings=[], security_definitions={})
    assert td["description"] == "A stage; see `Stage`."
    assert td["properties"]["speed"]["description"] == "Set by `move`."
    assert td["properties"]["position"]["description"] == "Read from `speed`."
    assert td["actions"]["move"]["description"] == "Go to `to`."
