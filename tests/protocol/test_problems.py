"""RFC 9457 problem details: stable titles, integer status, the body clients read."""

from __future__ import annotations

import orjson
import pytest

from trio_things.errors import InvalidValue, MethodNotAllowed
from trio_things.protocol.problems import ProblemDetails


@pytest.mark.parametrize(("status", "title"), [
    (413, "Content Too Large"), (422, "Unprocessable Content"), (404, "Not Found"),
    (499, "Error"),
])
def test_titles_are_rfc_9110_names_on_every_python(status: int, title: str) -> None:
    assert ProblemDetails.from_status(status, "x").title == title


def test_from_error_keeps_status_detail_and_allow() -> None:
    problem = ProblemDetails.from_error(InvalidValue("is too big", path="setpoint"))
    assert orjson.loads(problem.to_bytes()) == {
        "type": "about:blank", "title": "Unprocessable Content", "status": 422,
        "detail": "setpoint: is too big"}
    assert ProblemDetails.from_error(
        MethodNotAllowed("read-only", allow=("GET",))).allow == ("GET",)


def test_status_must_be_an_error_status() -> None:
    with pytest.raises(ValueError):
        ProblemDetails.from_status(200, "fine")
