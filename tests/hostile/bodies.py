"""Hypothesis strategies for hostile request bodies: as bytes, since some of what matters
(invalid UTF-8, lone surrogates, nesting past any parser's limit) is not a Python value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

NASTY_STRINGS = [
    "",
    "\x00",
    "nul\x00inside",
    "\x01\x02\x07\x08\x1b[31m\x7f",
    "\r\n\t\v\f",
    "\u202eevil\u202c \u2066isolate\u2069 \u200f\u200e",  # bidi overrides and marks
    "\u200b\u200c\u200d\ufeff",  # zero-width characters and a BOM
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "\U0001f600\U0001f9d1\u200d\U0001f680",  # emoji and a ZWJ sequence
    "\uffff\ufffe\U0010ffff",  # noncharacters
    "ｆｕｌｌｗｉｄｔｈ",
    "Привет, мир",
    "مرحبا بالعالم",
    "こんにちは世界",
    "%s%n{0}${jndi:x}",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
]

# Lone surrogates cannot be UTF-8: only JSON's \u escapes can carry them.
SURROGATE_ESCAPES = ["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d", "\\ude00\\ud83d"]

HUGE_NUMBERS = [
    0,
    -1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    10**300,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    0.1,
    -0.0,
]

text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.integers(min_value=10_000, max_value=200_000).map(lambda n: "a " * (n // 2)),
)
number = st.one_of(
    st.sampled_from(HUGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalar = st.one_of(st.none(), st.booleans(), number, text)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

FIELDS = [
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "seed", "stop", "stream", "stream_options", "n", "logprobs", "logit_bias",
    "user", "tools", "response_format", "min_tokens", "ignore_eos", "presence_penalty",
]  # fmt: skip

roles = st.sampled_from(["system", "user", "assistant", "developer", "tool", "", "root", None])
message = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": st.one_of(text, json_value)}),
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "image_url"]), "text": text}
                ),
                max_size=3,
            ),
        }
    ),
    json_value,
)


def _base(path: str) -> dict[str, Any]:
    if path == "/v1/chat/completions":
        return {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return {"model": "demo", "prompt": "hi", "max_tokens": 4}


@st.composite
def wrong_fields(draw: st.DrawFn, path: str) -> bytes:
    """A valid body with some fields replaced by values of any type, or dropped."""
    body = _base(path)
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        if draw(st.booleans()) and name in body:
            del body[name]
        elif name == "messages":
            body[name] = draw(st.lists(message, max_size=5))
        else:
            body[name] = draw(json_value)
    return json.dumps(body).encode()


@st.composite
def many_messages(draw: st.DrawFn, path: str) -> bytes:
    """Thousands of messages (or one prompt made of thousands of pieces)."""
    count = draw(st.integers(min_value=1_000, max_value=5_000))
    piece = draw(st.sampled_from(NASTY_STRINGS[1:]))
    body = _base(path)
    if path == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": piece}] * count
    else:
        body["prompt"] = [piece] * count
    return json.dumps(body).encode()


@st.composite
def surrogates(draw: st.DrawFn, path: str) -> bytes:
    """A lone surrogate escape in the text the model (and the cache) would read."""
    escape = draw(st.sampled_from(SURROGATE_ESCAPES))
    if path == "/v1/chat/completions":
        raw = (
            '{"model":"demo","max_tokens":4,"messages":[{"role":"user","content":"a'
            + escape
            + '"}]}'
        )
    else:
        raw = '{"model":"demo","max_tokens":4,"prompt":"a' + escape + '"}'
    return raw.encode()


@st.composite
def deep_nesting(draw: st.DrawFn, path: str) -> bytes:
    """Arrays or objects nested from a few dozen to a hundred thousand levels, anywhere."""
    depth = draw(st.one_of(st.integers(60, 70), st.integers(900, 1100), st.just(100_000)))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["top", "field", "content"]))
    if where == "top":
        return nested.encode()
    base = json.dumps(_base(path))
    if where == "field":
        return (base[:-1] + ',"user":' + nested + "}").encode()
    return (
        '{"model":"demo","messages":[{"role":"user","content":'
        + nested
        + '}],"prompt":'
        + nested
        + "}"
    ).encode()


broken_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b'"just a string"',
            b"\xff\xfe\x00{",
            b'{"model":"demo","prompt":"\xc3\x28"}',  # invalid UTF-8 inside a string
            b'{"model":"demo","prompt":"\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
            b'{"model":"demo","prompt":"hi","max_tokens":NaN}',
            b'{"model":"demo","prompt":"hi","temperature":Infinity}',
            b'{"model":"demo","prompt":"hi","max_tokens":1' + b"0" * 5000 + b"}",
            b'{"model":"demo","prompt":"hi","max_tokens":1e999}',
            b'{"model":"demo","prompt":"hi"}' + b"trailing",
            b'\xef\xbb\xbf{"model":"demo","prompt":"hi"}',
            b'{"model":"demo","model":{"x":1},"prompt":"hi"}',
        ]
    ),
)


def hostile_body(path: str) -> st.SearchStrategy[bytes]:
    """Every kind of hostile body for one route."""
    return st.one_of(
        wrong_fields(path),
        many_messages(path),
        surrogates(path),
        deep_nesting(path),
        broken_bytes,
    )
