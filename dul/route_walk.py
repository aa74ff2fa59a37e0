"""Malformed requests for every operation of an OpenAPI document, for the tests of
tests/integration/test_malformed_inputs.py: a fixed, deterministic set of bad values per
parameter and body field, derived from the document, so a route added to a service is walked
without being named here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

PROBLEM = "application/problem+json"
HEX32 = "0x" + "ab" * 32

#: Bad strings (ids, hashes, addresses, names, signatures, transactions): non-hex, odd-length
#: hex, wrong-length bytes32 and addresses, unicode and NUL, over-long.
BAD_STRINGS: tuple[Any, ...] = (
    "",
    "zz",
    "0x",
    "0xzz",
    "0x123",
    "0x" + "ab" * 20,
    "0x" + "ab" * 31,
    "0x" + "ab" * 33,
    "0X" + "AB" * 32,
    "ab" * 32,
    "0x" + "ab" * 32 + "\x00",
    "\u00e9\U0001f4a9\u202e",
    "x" * 100_000,
    "0x" + "ab" * 50_000,
)
#: Bad numbers: negative, past int64, past uint256, fractions, a bool, a numeric string.
BAD_INTEGERS: tuple[Any, ...] = (-1, 2**63, 2**64, 2**256, -(2**255) - 1, 10**400, 1.5, True, "1")
#: Values of the wrong JSON type for any field.
WRONG_TYPES: tuple[Any, ...] = (None, [], {}, "x", 0, 1.0e300, [["x"]] * 3)
#: Bodies that are not a JSON object at all, or not one a client could mean.
RAW_BODIES: tuple[tuple[str, bytes, str], ...] = (
    ("empty", b"", "application/json"),
    ("not JSON", b"not json", "application/json"),
    ("truncated", b'{"a": ', "application/json"),
    ("null", b"null", "application/json"),
    ("array", b"[]", "application/json"),
    ("number", b"1e999", "application/json"),
    ("string", b'"x"', "application/json"),
    ("NaN", b'{"x": NaN}', "application/json"),
    ("invalid UTF-8", b'{"x": "\xff\xfe"}', "application/json"),
    ("lone surrogate", b'{"x": "\\ud800"}', "application/json"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    ("duplicate keys", b'{"x": 1, "x": "y"}', "application/json"),
    ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
    ("text", b"{}", "text/plain"),
)
#: Bad path segments (ids of every kind).
BAD_PATH: tuple[str, ...] = (
    "zz",
    "0x",
    "0x123",
    "0x" + "g" * 64,
    "0x" + "ab" * 20,
    "0x" + "ab" * 31,
    "0x" + "ab" * 33,
    "-1",
    "115792089237316195423570985008687907853269984665640564039457584007913129639936",
    "%00",
    "%F0%9F%92%A9",
    "%ff",
    "..%2F..%2Fhealthz",
    "a" * 8_000,
)
#: Bad query values (formats, limits, cursors, flags, waits).
BAD_QUERY: tuple[str, ...] = (
    "",
    "-1",
    "0",
    "2",
    str(2**63),
    str(2**256),
    "1e9",
    "abc",
    "\u00e9\U0001f4a9",
    "\x00",
    "x" * 4_000,
    "9223372036854775808-0-0",
    "9223372036854775807-999999999-999999999",
    "1-2-3\n",
    "\u0663-\u0663-\u0663",
)


def bad_credentials(patient_token_length: int = 194) -> tuple[str | bytes, ...]:
    """Authorization headers that are no credential: empty, another scheme, over-long, not
    ASCII, a patient token's shape holding all-zero or all-0xff bytes or no base64, a JWT
    signed by nobody or not a JWT at all."""
    return (
        "Bearer",
        "Bearer  x",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 60_000,
        b"Bearer \xc3\xa9\xff",
        "Bearer dulpt_" + "A" * patient_token_length,
        "Bearer dulpt_" + "_" * patient_token_length,
        "Bearer dulpt_" + "!" * patient_token_length,
        "Bearer dulpt_" + "A" * (patient_token_length + 1),
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.",
        "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.AAAA",
        "Bearer a.b.c",
        "Bearer " + "eyJ" * 5_000,
    )


@dataclass
class Case:
    method: str
    route: str
    url: str
    label: str
    params: list[tuple[str, str]] = field(default_factory=list)
    content: bytes | None = None
    content_type: str | None = None


def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its $ref followed and an Optional's null branch dropped."""
    while True:
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[1]]
            continue
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = [b for b in schema[key] if b.get("type") != "null"]
                if branches:
                    schema = branches[0]
                    break
        else:
            if "allOf" in schema and len(schema["allOf"]) == 1:
                schema = schema["allOf"][0]
                continue
            return schema


def plausible(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value of `schema`'s shape (its example or default where it has one): a body whose
    fields but the one under test look right, so that field's bad value is what is judged."""
    schema = resolve(schema, components)
    if "example" in schema:
        return schema["example"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return {}
        return {
            name: plausible(sub, components, depth + 1)
            for name, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [plausible(schema.get("items", {}), components, depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    return HEX32


def bad_values(schema: dict[str, Any], components: dict[str, Any]) -> Iterator[Any]:
    schema = resolve(schema, components)
    kind = schema.get("type")
    yield from WRONG_TYPES
    if kind in ("integer", "number"):
        yield from BAD_INTEGERS
    elif kind == "array":
        item = plausible(schema.get("items", {}), components)
        yield [item] * 5_000
        yield [None]
        yield from ([bad] for bad in BAD_STRINGS[:6])
    elif kind != "boolean" and kind != "object":
        yield from BAD_STRINGS
        yield from BAD_INTEGERS[:4]


def body_cases(
    schema: dict[str, Any], components: dict[str, Any]
) -> Iterator[tuple[str, bytes, str]]:
    yield from RAW_BODIES
    base = plausible(schema, components)
    yield "plausible", json.dumps(base).encode(), "application/json"
    yield "empty object", b"{}", "application/json"
    if not isinstance(base, dict):
        return
    yield (
        "unknown field",
        json.dumps({**base, "unexpected": "x" * 1000}).encode(),
        "application/json",
    )
    properties = resolve(schema, components).get("properties", {})
    for name, sub in properties.items():
        without = {k: v for k, v in base.items() if k != name}
        yield f"{name} missing", json.dumps(without).encode(), "application/json"
        for value in bad_values(sub, components):
            yield (
                f"{name}={value!r:.40}",
                json.dumps({**base, name: value}).encode(),
                ("application/json"),
            )
        # one level down: each field of a nested object (or of an array's objects)
        inner = resolve(sub, components)
        if inner.get("type") == "array":
            inner = resolve(inner.get("items", {}), components)
            wrap: Callable[[Any], Any] = lambda v: [v]  # noqa: E731
        else:
            wrap = lambda v: v  # noqa: E731
        nested = inner.get("properties", {})
        if not nested:
            continue
        inner_base = plausible(inner, components)
        for sub_name, sub_schema in nested.items():
            for value in bad_values(sub_schema, components):
                changed = wrap({**inner_base, sub_name: value})
                yield (
                    f"{name}.{sub_name}={value!r:.30}",
                    json.dumps({**base, name: changed}).encode(),
                    "application/json",
                )


def operation_cases(
    path: str,
    method: str,
    operation: dict[str, Any],
    components: dict[str, Any],
    good: Mapping[str, str],
) -> Iterator[Case]:
    """The malformed requests for one operation: each path parameter bad in turn (the others
    plausible), each query parameter bad in turn and repeated, and the body's bad shapes."""
    parameters = operation.get("parameters", [])
    path_names = [p["name"] for p in parameters if p["in"] == "path"]
    query = [p for p in parameters if p["in"] == "query"]

    def url(**bad: str) -> str:
        out = path
        for name in path_names:
            out = out.replace("{" + name + "}", bad.get(name, good.get(name, HEX32)))
        return out

    body_schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
    )
    plain = (
        json.dumps(plausible(body_schema, components)).encode() if body_schema is not None else None
    )
    upper = method.upper()
    content_type = "application/json" if plain is not None else None
    stray = [("format", "xml"), ("limit", "-1"), ("cursor", "\u00e9" * 100), ("x", "y" * 1000)]
    yield Case(upper, path, url(), "stray query", stray, plain, content_type)
    for name in path_names:
        for value in BAD_PATH:
            yield Case(upper, path, url(**{name: value}), f"path {name}={value:.30}", [], plain,
                       content_type)  # fmt: skip
    for parameter in query:
        for value in BAD_QUERY:
            yield Case(upper, path, url(), f"query {parameter['name']}={value:.20}",
                       [(parameter["name"], value)], plain,
                       content_type)  # fmt: skip
        yield Case(upper, path, url(), f"query {parameter['name']} twice",
                   [(parameter["name"], "1"), (parameter["name"], "x")], plain,
                   content_type)  # fmt: skip
    if body_schema is not None:
        for label, content, kind in body_cases(body_schema, components):
            yield Case(upper, path, url(), f"body {label}", [], content, kind)
    elif upper == "POST":
        yield Case(upper, path, url(), "body not JSON", [], b"not json", "application/json")


def walk(document: dict[str, Any], good: Mapping[str, str] | None = None) -> Iterator[Case]:
    """Every operation's cases; `good` names a valid value for path parameters that are not an
    id (the audit service's provenance `kind`), used while another parameter is the bad one."""
    components = document.get("components", {}).get("schemas", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield from operation_cases(path, method, operation, components, good or {})


def send(client: httpx.Client, case: Case, headers: Mapping[str, str | bytes]) -> httpx.Response:
    sent = [
        (name.encode(), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in headers.items()
    ]
    if case.content_type is not None:
        sent.append((b"content-type", case.content_type.encode()))
    return client.request(
        case.method,
        case.url,
        params=tuple(case.params),
        content=case.content,
        headers=sent,
    )


def judge(case: Case, response: httpx.Response) -> str | None:
    """What is wrong with `response` to a malformed `case` (None: nothing)."""
    status = response.status_code
    where = f"{case.method} {case.url[:80]} [{case.label}] -> {status}"
    if status >= 500:
        return f"{where}: {response.text[:300]}"
    if "Traceback" in response.text:
        return f"{where}: a traceback"
    if status < 400:
        return None
    if not response.headers.get("content-type", "").startswith(PROBLEM):
        return f"{where}: {response.headers.get('content-type')} {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"{where}: problem body not JSON"
    if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not body["code"]:
        return f"{where}: no code in {response.text[:200]}"
    if body["code"].startswith("http_"):  # a status named, not a stable code of the API
        return f"{where}: code {body['code']}"
    if body.get("status") != status:
        return f"{where}: status {body.get('status')} in the body"
    return None
