"""An action's values: its input checked and structured into keyword arguments, what
it returned checked and converted to JSON data, and what a failure records.

It logs to the ``trio_things.runtime.actions`` logger, as it did inside
``runtime/actions.py``: these lines are the action runner's.
"""

from __future__ import annotations

import logging
from typing import Any

from trio_things.errors import BadRequest, InvalidValue, RemoteProtocolError
from trio_things.model.affordances import ActionSpec
from trio_things.model.blob import Blob
from trio_things.model.invocation import Invocation, InvocationError
from trio_things.model.values import structure, unstructure_linking

__all__: list[str] = []

logger = logging.getLogger("trio_things.runtime.actions")


def _arguments(spec: ActionSpec, input: Any) -> dict[str, Any]:
    if input is None:
        input = {}
    if not isinstance(input, dict):
        raise BadRequest(f"the input of action {spec.name!r} must be a JSON object of "
                         "keyword arguments")
    if spec.input_schema is None:
        if input:
            raise InvalidValue(f"takes no input, got {sorted(input)}", path=spec.name)
        return {}
    spec.input_schema.validate(input, spec.name)
    return {
        p.name: structure(input[p.name], p.value_type, path=f"{spec.name}.{p.name}")
        for p in spec.parameters if p.name in input
    }


def _output(spec: ActionSpec, result: Any) -> tuple[Any, tuple[Blob, ...]]:
    """The JSON form of what an action returned, checked against its declared output
    as inputs are against theirs, and the blobs it links to (for the invocation to
    hold); :class:`~trio_things.errors.InvalidValue` if it does not fit (which is the
    Thing's mistake, see :func:`_bad_output`)."""
    if spec.output_schema is None:
        return None, ()
    path = f"{spec.name} output"
    output, blobs = unstructure_linking(result, spec.output_type, path=path)
    spec.output_schema.validate(output, path)
    return output, blobs


def _bad_output(invocation: Invocation, error: InvalidValue) -> InvocationError:
    """An action returned what its annotation says it does not: a bug in the Thing,
    so a 500 that names the action, never the value passed on as if it were right."""
    logger.error("action %s.%s (invocation %s) returned a value that does not fit its "
                 "declared output: %s", invocation.thing, invocation.action, invocation.id,
                 error.detail)
    return InvocationError(
        title="InvalidOutput",
        detail=f"action {invocation.action!r} returned a value that does not fit its "
               f"declared output type: {error.detail}")


def _failure(invocation: Invocation, error: Exception) -> InvocationError:
    if isinstance(error, RemoteProtocolError):
        # The action rejected its input or state on purpose: the client's problem.
        return InvocationError(title=type(error).__name__, detail=error.detail,
                               status=error.status)
    logger.error("action %s.%s (invocation %s) failed", invocation.thing, invocation.action,
                 invocation.id, exc_info=error)
    return InvocationError(title=type(error).__name__, detail=str(error) or repr(error))
