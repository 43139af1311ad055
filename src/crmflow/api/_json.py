"""Request bodies in JSON, read as strictly as the CLI reads `PROP:=JSON` and import files
(`crmflow.definitions.parse_json`): a key twice in one object is refused, and `NaN`,
`Infinity`, `1e999` or an integer beyond 64 bits is left as a marker that the value checks
refuse at its place (`["body", "properties", "score"]`), instead of being read as a float
that no store can keep or an integer that no column holds."""

from __future__ import annotations

import json

from starlette.requests import Request

from crmflow.definitions import InvalidInput, parse_json

from ._problems import INVALID_REQUEST, ApiProblem


def _is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def read_strictly(request: Request) -> None:
    """Parse a JSON body strictly, before FastAPI reads it (it reads `request.json()`, which
    keeps what is parsed here). Invalid JSON is left to FastAPI's own error."""
    if not _is_json(request):
        return
    body = await request.body()
    if not body:
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiProblem(
            INVALID_REQUEST,
            f"the body is not UTF-8 (byte {exc.start})",
            errors=[(["body"], "not UTF-8")],
        ) from None
    try:
        parsed = parse_json(text)
    except json.JSONDecodeError:
        return  # FastAPI reports it, with the position
    except InvalidInput as exc:
        raise ApiProblem(INVALID_REQUEST, f"body: {exc}", errors=[(["body"], str(exc))]) from None
    except RecursionError:
        raise ApiProblem(
            INVALID_REQUEST, "body: nested too deeply", errors=[(["body"], "nested too deeply")]
        ) from None
    request._json = parsed
