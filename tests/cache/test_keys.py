"""Exact-cache keys: what must not change a key, and what must."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cache.keys import canonical_request, digest, exact_key, namespace_hash
from cache.scope import scope_of, semantic_query

text = st.text(min_size=0, max_size=30)
roles = st.sampled_from(["system", "user", "assistant", "tool"])
message = st.fixed_dictionaries(
    {"role": roles, "content": text},
    optional={"name": st.from_regex(r"[a-z]{1,8}", fullmatch=True)},
)
params = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2, allow_nan=False),
        "top_p": st.floats(0, 1, allow_nan=False),
        "max_tokens": st.integers(1, 4096),
        "seed": st.integers(0, 2**31),
        "stop": st.lists(text, max_size=3),
        "n": st.integers(1, 4),
        "presence_penalty": st.floats(-2, 2, allow_nan=False),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    },
)
bodies = st.builds(
    lambda model, msgs, p: {"model": model, "messages": msgs, **p},
    st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True),
    st.lists(message, min_size=1, max_size=4),
    params,
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(
    body=bodies,
    seed=st.integers(0, 1000),
    noise=st.fixed_dictionaries(
        {},
        optional={
            "stream": st.booleans(),
            "user": text,
            "request_id": text,
            "stream_options": st.just({"include_usage": True}),
            "metadata": st.dictionaries(st.text(max_size=5), text, max_size=2),
        },
    ),
    indent=st.sampled_from([None, 0, 2, 4]),
)
def test_non_affecting_changes_keep_the_key(
    body: dict[str, Any], seed: int, noise: dict[str, Any], indent: int | None
) -> None:
    rng = random.Random(seed)
    variant = json.loads(json.dumps(shuffled({**body, **noise}, rng), indent=indent))
    if rng.random() < 0.5:  # text content as a list of text parts means the same
        for m in variant["messages"]:
            m["content"] = [{"type": "text", "text": m["content"]}]
    if rng.random() < 0.5:  # an explicit null is the same as an absent field
        variant["logit_bias"] = None
    if "temperature" in variant and float(variant["temperature"]).is_integer():
        variant["temperature"] = int(variant["temperature"])  # 1 and 1.0 are the same number
    assert exact_key("ns", "chat", variant) == exact_key("ns", "chat", body)


def _change(body: dict[str, Any], what: str, data: st.DataObject) -> dict[str, Any]:
    """A copy of the body with one answer-changing difference."""
    out = copy.deepcopy(body)
    msgs = out["messages"]
    i = data.draw(st.integers(0, len(msgs) - 1))
    if what == "content":
        msgs[i]["content"] = data.draw(text.filter(lambda t: t != msgs[i]["content"]))
    elif what == "role":
        msgs[i]["role"] = data.draw(roles.filter(lambda r: r != msgs[i]["role"]))
    elif what == "name":
        msgs[i]["name"] = data.draw(
            st.from_regex(r"[A-Z]{1,8}", fullmatch=True).filter(lambda n: n != msgs[i].get("name"))
        )
    elif what == "tool_calls":
        msgs[i]["tool_calls"] = [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    elif what == "messages":
        msgs.append({"role": "user", "content": data.draw(text)})
    elif what == "model":
        out["model"] = out["model"] + "x"
    elif what == "temperature":
        old = out.get("temperature")
        out["temperature"] = data.draw(
            st.floats(0, 2, allow_nan=False).filter(lambda t: old is None or t != old)
        )
    elif what == "max_tokens":
        out["max_tokens"] = out.get("max_tokens", 0) + 1
    elif what == "seed":
        out["seed"] = out.get("seed", -1) + 1
    elif what == "stop":
        out["stop"] = [*out.get("stop", []), "\n\n"]
    elif what == "tools":
        out["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    elif what == "tool_choice":
        out["tool_choice"] = "required"
    elif what == "logit_bias":
        out["logit_bias"] = {"50256": -100}
    return out


@settings(max_examples=200, deadline=None)
@given(
    body=bodies,
    what=st.sampled_from(
        [
            "content",
            "role",
            "name",
            "tool_calls",
            "messages",
            "model",
            "temperature",
            "max_tokens",
            "seed",
            "stop",
            "tools",
            "tool_choice",
            "logit_bias",
        ]
    ),
    data=st.data(),
)
def test_affecting_changes_change_the_key(
    body: dict[str, Any], what: str, data: st.DataObject
) -> None:
    changed = _change(body, what, data)
    assert exact_key("ns", "chat", changed) != exact_key("ns", "chat", body)


@given(body=bodies)
def test_namespace_and_endpoint_are_part_of_the_key(body: dict[str, Any]) -> None:
    assert exact_key("a", "chat", body) != exact_key("b", "chat", body)
    assert exact_key("a", "chat", body) != exact_key("a", "completion", body)


def test_tool_call_arguments_whitespace_does_not_count() -> None:
    def body(args: str) -> dict[str, Any]:
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
        return {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}

    assert exact_key("n", "chat", body('{"a": 1, "b": 2}')) == exact_key(
        "n", "chat", body('{"b":2,"a":1}')
    )
    assert exact_key("n", "chat", body('{"a": 1}')) != exact_key("n", "chat", body('{"a": 2}'))


def test_key_names_carry_no_user_text() -> None:
    key = exact_key(
        "acme-corp", "chat", {"model": "m", "messages": [{"role": "user", "content": "secret"}]}
    )
    assert all(c in "0123456789abcdef" for c in key + namespace_hash("acme-corp"))


def _parts(texts: list[str]) -> list[dict[str, str]]:
    return [{"type": "text", "text": t} for t in texts]


@settings(max_examples=150, deadline=None)
@given(a=st.lists(text, min_size=1, max_size=4), b=st.lists(text, min_size=1, max_size=4))
def test_content_parts_keep_their_boundaries(a: list[str], b: list[str]) -> None:
    def key(content: Any) -> str:
        return exact_key(
            "n", "chat", {"model": "m", "messages": [{"role": "user", "content": content}]}
        )

    # Distinct part lists are distinct inputs upstream, even when their texts join alike.
    same = a == b
    assert (key(_parts(a)) == key(_parts(b))) == same
    if len(a) > 1:
        assert key(_parts(a)) != key("".join(a))
    assert key(_parts(a[:1])) == key(a[0])


def test_two_part_message_differs_from_its_joined_text() -> None:
    def key(content: Any) -> str:
        return exact_key(
            "n", "chat", {"model": "m", "messages": [{"role": "user", "content": content}]}
        )

    assert key(_parts(["a", "b"])) != key("ab")
    assert key(_parts(["a", "b"])) != key(_parts(["ab"]))
    assert key(_parts(["a", "b"])) != key(_parts(["a", "", "b"]))


def _scope_by_definition(namespace: str, endpoint: str, body: dict[str, Any]) -> str:
    """The scope as specified: the canonical request with the question left out."""
    if endpoint == "chat":
        *earlier, last = body["messages"]
        rest = {k: v for k, v in last.items() if k != "content"}
        context = {**body, "messages": [*earlier, rest]}
    else:
        context = {k: v for k, v in body.items() if k != "prompt"}
    return digest(["scope", canonical_request(namespace, endpoint, context)])


@settings(max_examples=150, deadline=None)
@given(
    body=bodies,
    question=st.text(min_size=1, max_size=30).filter(str.strip),
    parts=st.booleans(),
    completion=st.booleans(),
)
def test_scope_cut_from_the_canonical_request_matches_its_definition(
    body: dict[str, Any], question: str, parts: bool, completion: bool
) -> None:
    if completion:
        endpoint = "completion"
        body = {**{k: v for k, v in body.items() if k != "messages"}, "prompt": question}
    else:
        endpoint = "chat"
        content: Any = _parts([question]) if parts else question
        body["messages"][-1] |= {"role": "user", "content": content}
    canonical = canonical_request("ns", endpoint, body)
    cut = semantic_query("ns", endpoint, body, canonical=canonical)
    alone = semantic_query("ns", endpoint, body)
    assert cut is not None and cut == alone
    assert cut.scope == _scope_by_definition("ns", endpoint, body)
    assert canonical == canonical_request("ns", endpoint, body)  # left as it was


@settings(max_examples=100, deadline=None)
@given(body=bodies, data=st.data())
def test_a_scope_without_skipped_messages_is_the_scope_of_the_body_without_them(
    body: dict[str, Any], data: st.DataObject
) -> None:
    body["messages"][-1] |= {"role": "user", "content": "the question"}
    history = range(len(body["messages"]) - 1)
    skip = frozenset(data.draw(st.sets(st.sampled_from(history)) if history else st.just(set())))
    kept = [m for i, m in enumerate(body["messages"]) if i not in skip]
    canonical = canonical_request("ns", "chat", body)
    assert scope_of("chat", canonical, skip) == _scope_by_definition(
        "ns", "chat", {**body, "messages": kept}
    )
