"""Strict JSON request bodies: what `json.loads` accepts but later code would choke on is
refused here, so hostile input gets a 400 instead of a 500 deep in a handler.

Used by the backend and, since it fronts the same wire format, by the gateway.
"""

from __future__ import annotations

import json
from typing import Any

# Far beyond any real OpenAI request (a tool's JSON schema nests a dozen levels), and far
# below the interpreter's recursion limit, which json.loads, json.dumps and pydantic all hit.
MAX_DEPTH = 64


class InvalidJson(ValueError):
    """The body is not a JSON object this service can safely handle; the message says why.
    `code` is OpenAI's `invalid_json` when the body is not valid JSON at all."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_string(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJson(
                "The request body contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)."
            ) from None


def _check_tree(root: Any, max_depth: int) -> None:
    """Walks the parsed value without recursion: depth and string encodability."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > max_depth:
            raise InvalidJson(f"The request body is nested more than {max_depth} levels deep.")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key)
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in value)


def parse_json_object(raw: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body as a dict, or InvalidJson: not UTF-8, not JSON, NaN or Infinity, nested past
    `max_depth`, a lone surrogate in a string, or not an object at the top."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJson(
            f"The request body is nested more than {max_depth} levels deep."
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits, NaN
        raise InvalidJson(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidJson("The request body must be a JSON object.")
    _check_tree(data, max_depth)
    return data
