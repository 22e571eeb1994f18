"""The affordances of a Thing class as frozen specs: what everything downstream reads.

When a Thing class is complete, :meth:`trio_things.Thing.__init_subclass__` resolves its
type hints and *binds* every declaration in its body (:mod:`trio_things.model.declarations`:
``tt.property(...)``, ``@tt.action``, ``tt.event(...)``) to a frozen spec:
:class:`PropertySpec`, :class:`ActionSpec`, :class:`EventSpec`, with the name, the type,
the :class:`~trio_things.model.schema.DataSchema` and the flags, gathered in
:class:`Affordances`. Everything downstream (the TD, validation, HTTP and WebSocket) reads
these specs, never the declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from trio_things.model.schema import DataSchema
from trio_things.model.values import kept_as_given

__all__ = [
    "ActionContext",
    "ActionSpec",
    "Affordances",
    "EventSpec",
    "ParameterSpec",
    "PropertySpec",
    "StreamSpec",
]


@attrs.frozen(kw_only=True)
class PropertySpec:
    """What a property is: its name, type, schema and flags.

    ``readonly`` means clients may not write it; Thing code always may.
    ``functional`` properties are backed by a getter (and maybe a setter) that may
    block on hardware, so the server calls them from a worker thread. A ``setting``
    (``tt.setting``) is a data property the server keeps on disk: loaded when it
    starts, saved when it changes.
    """

    name: str
    value_type: Any
    schema: DataSchema
    readonly: bool
    observable: bool
    functional: bool
    title: str | None = None
    description: str | None = None
    setting: bool = False
    kept_as_given: Callable[[Any], bool] | None = attrs.field(eq=False, repr=False)
    """Whether a value Thing code assigns may be stored as it is, without a round trip
    through JSON (:func:`~trio_things.model.values.kept_as_given`)."""

    @kept_as_given.default
    def _kept_as_given(self) -> Callable[[Any], bool] | None:
        return kept_as_given(self.value_type)


@attrs.frozen(kw_only=True)
class ParameterSpec:
    """One keyword argument of an action."""

    name: str
    value_type: Any
    schema: DataSchema
    required: bool
    default: Any = None


@attrs.frozen(kw_only=True)
class ActionSpec:
    """What an action is: its parameters, output and how it runs.

    ``is_async`` actions run as a task in the server's nursery; the others run in a
    worker thread. ``context_parameter`` names the parameter (if any) that receives the
    :class:`ActionContext` instead of client input.

    ``max_concurrent`` invocations of the action run at once on one Thing (``None``: no
    limit); up to ``max_queued`` more wait ``pending``, in order, and one more is
    refused. Each running worker thread is one the server cannot lend to anything
    else, so ``@tt.action`` gives thread actions a small default (see
    :func:`trio_things.action`).
    """

    name: str
    parameters: tuple[ParameterSpec, ...]
    input_schema: DataSchema | None
    output_type: Any
    output_schema: DataSchema | None
    is_async: bool
    context_parameter: str | None = None
    safe: bool = False
    idempotent: bool = False
    title: str | None = None
    description: str | None = None
    max_concurrent: int | None = None
    max_queued: int = 0


@attrs.frozen(kw_only=True)
class EventSpec:
    """What an event carries: its payload type and schema (``None``: no payload)."""

    name: str
    payload_type: Any
    schema: DataSchema | None
    title: str | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class StreamSpec:
    """A stream of frames (``tt.frame_stream``): each viewer is sent the newest frame,
    never a backlog. ``media_type`` is every frame's (``image/jpeg`` for MJPEG)."""

    name: str
    media_type: str
    title: str | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class Affordances:
    """Every affordance of a Thing class, in declaration order."""

    properties: Mapping[str, PropertySpec]
    actions: Mapping[str, ActionSpec]
    events: Mapping[str, EventSpec]
    streams: Mapping[str, StreamSpec] = attrs.field(factory=dict)
    """Frame streams: not TD affordances (the TD links them), served beside them."""


class ActionContext(Protocol):
    """What an action can ask of the server while it runs.

    Declare a parameter annotated ``tt.ActionContext`` to receive it; it is not part
    of the action's input. In a worker thread, call :meth:`check_cancelled` (or use
    :meth:`sleep`) often: Python cannot interrupt a thread, so a blocking action is
    cancelled only where it checks. An ``async`` action is cancelled at any ``await``.
    """

    #: The id of this invocation, as clients see it.
    invocation_id: str

    def log(self, message: str, *, level: str = "INFO") -> None:
        """Append a line to the invocation's log (clients see it) and the server's log."""

    def check_cancelled(self) -> None:
        """Raise if the invocation was cancelled (call it from worker-thread actions)."""

    def sleep(self, seconds: float) -> None:
        """Block a worker thread for ``seconds``, but return early by raising on cancel."""


# --------------------------------------------------------------------------- properties
