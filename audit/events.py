"""Fast, ABI-driven decoding of the contracts' logs: the audit trail's data contract.

web3's per-log decoding costs about ten times what the indexer can afford, so the tables here
are compiled once from the packaged ABIs (`dul.contracts.artifacts`): topic0 -> event spec.
An event whose data part holds only static types (AccessRecorded, ResultReleased and every
lifecycle event without a string or array) is decoded by slicing the hex text word by word,
with the same range and padding checks eth-abi's strict decoder makes; so is an event whose
only dynamic parts are arrays of such words (ConsentRecorded's DUO codes: 170 -> ~10 us) or
of flat static records (ArtifactRegistered's releases and parents), its offsets and lengths
bounds-checked as eth-abi reads them. Any other event (names, field
lists, agreement terms, signatures) takes one `eth_abi.decode` call. All paths are checked
against each other and against eth-abi in `tests/unit/test_audit_events.py`.

Decoded values are plain JSON-able Python: bytesN, bytes and addresses as lowercase 0x hex,
integers of up to 64 bits as int and wider ones as 0x hex (JSON readers lose precision past
2**53), structs as dicts by component name, arrays as lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_abi import decoding as abi_decoding
from eth_abi import encoding as abi_encoding
from eth_abi.codec import ABICodec
from eth_abi.exceptions import DecodingError
from eth_abi.registry import BaseEquals
from eth_abi.registry import registry as default_registry

from dul.contracts.artifacts import load
from dul.contracts.bindings import EventBinding
from dul.contracts.deployment import CONTRACT_NAMES

#: The deployed contracts whose events make up the audit trail: every one of them.
AUDITED_CONTRACTS: Final = CONTRACT_NAMES

_WORD: Final = 64  # hex characters per 32-byte ABI word
_ZERO_PAD: Final = "0" * _WORD
_UINT_RE: Final = re.compile(r"^uint(\d*)$")
_INT_RE: Final = re.compile(r"^int(\d*)$")
_BYTES_N_RE: Final = re.compile(r"^bytes(\d+)$")
_ARRAY_RE: Final = re.compile(r"^(.*)\[(\d*)\]$")


class _TextDecoder(abi_decoding.StringDecoder):
    """A Solidity `string` holds any bytes. Bytes that are not UTF-8, and NUL (which neither
    PostgreSQL text nor JSONB can hold), are kept as `\\xNN` escapes: the event is stored,
    never refused for its text."""

    @staticmethod
    def decoder_fn(data: bytes, handle_string_errors: str = "strict") -> str:
        return data.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


def _codec() -> ABICodec:
    registry = default_registry.copy()  # type: ignore[no-untyped-call]
    registry.unregister("string")
    text = BaseEquals("string")  # type: ignore[no-untyped-call]
    registry.register(text, abi_encoding.TextStringEncoder, _TextDecoder, label="string")
    return ABICodec(registry)


_CODEC: Final = _codec()


def abi_decode(types: Sequence[str], data: bytes, *, strict: bool = True) -> tuple[Any, ...]:
    """eth-abi's strict decoding, strings as `_TextDecoder` reads them."""
    return tuple(_CODEC.decode(list(types), data, strict=strict))


class EventDecodeError(ValueError):
    """A log that claims to be one of our events does not decode as one (never silently kept)."""


@dataclass(slots=True)
class DecodedEvent:
    """One contract event at its chain position; `args` as described in the module docstring.

    Not frozen: a frozen dataclass's `__init__` sets each field through `object.__setattr__`,
    ~1 us per event of a catch-up (measured 1.3 against 0.3 us); nothing changes one."""

    block_number: int
    tx_index: int
    log_index: int
    block_hash: str
    tx_hash: str
    address: str
    contract: str
    name: str
    args: dict[str, Any]
    args_json: str
    """`args` as compact JSON text, the form the store keeps."""
    block_timestamp: int | None = None
    """From the log when the node includes it (anvil, recent geth); None otherwise."""

    @property
    def position(self) -> tuple[int, int, int]:
        """The sortable unique key: block / transaction index / log index."""
        return (self.block_number, self.tx_index, self.log_index)


# --- value conversion -----------------------------------------------------------------------


def _is_static(param: Mapping[str, Any]) -> bool:
    type_: str = param["type"]
    array = _ARRAY_RE.match(type_)
    if array:
        return False  # none of our events carries a fixed-size array; treat them as dynamic
    if type_ == "tuple":
        return all(_is_static(c) for c in param["components"])
    return type_ not in ("string", "bytes")


def _int_bits(type_: str) -> tuple[bool, int] | None:
    for pattern, signed in ((_UINT_RE, False), (_INT_RE, True)):
        match = pattern.match(type_)
        if match:
            return signed, int(match.group(1) or 256)
    return None


def _word_converter(type_: str) -> Callable[[str], Any]:
    """A function from one 64-hex-character word to the value, with eth-abi's strict checks."""
    ints = _int_bits(type_)
    if ints is not None:
        signed, bits = ints
        if signed:
            half, full = 1 << 255, 1 << 256
            low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

            def convert_int(word: str) -> Any:
                value = int(word, 16)
                if value >= half:
                    value -= full
                if not low <= value <= high:
                    raise EventDecodeError(f"{type_} out of range: {value}")
                return value if bits <= 64 else hex(value)

            return convert_int
        limit = 1 << bits
        if bits <= 64:

            def convert_small_uint(word: str) -> Any:
                value = int(word, 16)
                if value >= limit:
                    raise EventDecodeError(f"{type_} out of range: {value}")
                return value

            return convert_small_uint

        def convert_wide_uint(word: str) -> Any:
            value = int(word, 16)
            if value >= limit:
                raise EventDecodeError(f"{type_} out of range: {value}")
            return hex(value)

        return convert_wide_uint
    if type_ == "address":

        def convert_address(word: str) -> Any:
            if word[:24] != "000000000000000000000000":
                raise EventDecodeError(f"address word with non-zero padding: {word}")
            return "0x" + word[24:].lower()

        return convert_address
    if type_ == "bool":

        def convert_bool(word: str) -> Any:
            if word == _ZERO_PAD:
                return False
            if word[:63] == _ZERO_PAD[:63] and word[63] == "1":
                return True
            raise EventDecodeError(f"bool word is neither 0 nor 1: {word}")

        return convert_bool
    bytes_n = _BYTES_N_RE.match(type_)
    if bytes_n:
        size = int(bytes_n.group(1)) * 2
        if size == _WORD:
            return lambda word: "0x" + word.lower()

        def convert_bytes_n(word: str) -> Any:
            if word[size:] != _ZERO_PAD[size:]:
                raise EventDecodeError(f"{type_} word with non-zero padding: {word}")
            return "0x" + word[:size].lower()

        return convert_bytes_n
    raise EventDecodeError(f"no word decoder for ABI type {type_}")


def _plain(param: Mapping[str, Any], value: Any) -> Any:
    """An eth-abi decoded value in the same plain form as the word decoders give."""
    type_: str = param["type"]
    array = _ARRAY_RE.match(type_)
    if array:
        inner = {**param, "type": array.group(1)}
        return [_plain(inner, item) for item in value]
    if type_ == "tuple":
        return {c["name"]: _plain(c, v) for c, v in zip(param["components"], value, strict=True)}
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if type_ == "address":
        return str(value).lower()
    if isinstance(value, int) and not isinstance(value, bool):
        ints = _int_bits(type_)
        if ints is not None and ints[1] > 64:
            return hex(value)
    return value


# --- compiled event specs -------------------------------------------------------------------

_Leaf = tuple[str, str, str]
"""(path into args, Python expression of its 64-hex-character word, ABI type) of one value."""


def _static_leaves(param: Mapping[str, Any], path: str, at: int, out: list[_Leaf]) -> int:
    """Flattens one static data parameter into its words; returns the next free word index."""
    if param["type"] == "tuple":
        for component in param["components"]:
            at = _static_leaves(component, f"{path}.{component['name']}", at, out)
        return at
    out.append((path, f"d[{at * _WORD}:{(at + 1) * _WORD}]", param["type"]))
    return at + 1


def _leaf_expression(type_: str, word: str, name: str, converters: dict[str, Any]) -> str:
    """Inline Python for the commonest word type, a converter call for the rest."""
    if type_ == "bytes32":
        return f'"0x" + {word}'
    converters[name] = _word_converter(type_)
    return f"{name}({word})"


_DATA_WORD_RE: Final = re.compile(r"^d\[(\d+):(\d+)\]$")


def _leaf_lines(variable: str, type_: str, word: str, name: str,
                converters: dict[str, Any]) -> list[str]:  # fmt: skip
    """The statements that set `variable` to one value: an address or a uint of up to 64
    bits in the data part is checked and read in place (its zero padding compared where it
    lies, only the low digits parsed), with the converters' checks and without their call
    (AccessRecorded's decoder alone: 4.5 -> 4.2 us); any other value through
    `_leaf_expression`."""
    match = _DATA_WORD_RE.match(word)
    ints = _int_bits(type_)
    if match is not None:
        start = int(match.group(1))
        pad = None
        if type_ == "address":
            pad = _WORD - 40
        elif ints is not None and not ints[0] and ints[1] <= 64 and ints[1] % 4 == 0:
            pad = _WORD - ints[1] // 4
        if pad is not None:
            value = f'"0x" + d[{start + pad}:{start + _WORD}]' if type_ == "address" else (
                f"int(d[{start + pad}:{start + _WORD}], 16)"
            )  # fmt: skip
            word_text = f"d[{start}:{start + _WORD}]"
            refusal = f"EventDecodeError({type_ + ' word out of range: '!r} + {word_text})"
            return [
                f"    if not d.startswith({'0' * pad!r}, {start}): raise {refusal}",
                f"    {variable} = {value}",
            ]
    return [f"    {variable} = {_leaf_expression(type_, word, name, converters)}"]


def _json_piece(type_: str, variable: str) -> str:
    """The f-string piece that renders one value as `json.dumps` would: an int as `str` does
    (without a format spec an exact int takes `str`'s fast path; `:d` went through int's full
    formatter, ~1,500 instructions a value), a bool by its truth."""
    ints = _int_bits(type_)
    if ints is not None and ints[1] <= 64:
        return f"{{{variable}}}"
    if type_ == "bool":
        return f"{{_JSON_BOOL[not {variable}]}}"
    return f'"{{{variable}}}"'  # hex text: nothing to escape


_JSON_BOOL: Final = ("true", "false")


StaticDecoder = Callable[[Sequence[str], str], tuple[dict[str, Any], str]]
"""(topics, data hex lowercase without 0x) -> (args dict, args as compact JSON text)."""
StaticValues = Callable[[Sequence[str], str], tuple[tuple[Any, ...], str]]
"""(topics, data as for `StaticDecoder`) -> (the values in `EventSpec.leaves` order, the same
JSON text)."""


_BYTE: Final = {f"{n:02x}": n for n in range(256)}
"""Two lowercase hex digits -> their value: a uint8 word's value without an `int()` call."""


def _data_piece(type_: str, group: str, name: str, converters: dict[str, Any]) -> tuple[str, str]:
    """(regular expression of one data word, Python expression of its value from the word's
    captured `group`), checking what `_leaf_lines` checks: zero padding where the value does
    not reach, the rest through the same expression or converter on the same characters."""
    ints = _int_bits(type_)
    if type_ == "address":
        return f"0{{{_WORD - 40}}}(.{{40}})", f'"0x" + {group}'
    if ints is not None and not ints[0] and ints[1] <= 64 and ints[1] % 4 == 0:
        digits = ints[1] // 4
        if digits == 2:  # only hex digits match, so `_BYTE` knows every value
            return f"0{{{_WORD - 2}}}([0-9a-f]{{2}})", f"_BYTE[{group}]"
        return f"0{{{_WORD - digits}}}(.{{{digits}}})", f"int({group}, 16)"
    return "(.{64})", _leaf_expression(type_, group, name, converters)


def _generate_static_decoder(leaves: Sequence[_Leaf]) -> tuple[StaticDecoder, StaticValues]:
    """Compiles the decoder of an all-static data part into one Python function, and its
    twin that returns the values flat (in `leaves` order) instead of as an args dict: the
    indexer projects an access's row straight from them (`audit.store.prepare_logs`), without
    the dicts it would only read once. Both run the same statements.

    About four times faster than walking a plan word by word (AccessRecorded: 15 -> ~4 us),
    and it renders the stored JSON text in the same pass, three times faster than
    `json.dumps`; the indexer spends most of its CPU here. The data words are cut by one
    regular expression (`_data_piece`: their zero padding matched in the same C call, every
    word captured at once), not by a slice and a padding check each (AccessRecorded's
    values: 62,700 -> 51,600 instructions per event). Data it does not match (a padding that is not
    zero, a uint8 that is not hex) goes through the word-by-word statements, which raise
    exactly what they always raised; what it matches is read by the same expressions on the
    same characters, in the same order. The generated source is built from ABI identifiers
    (checked below) and integers only, never from log contents.
    """
    converters: dict[str, Callable[[str], Any]] = {}
    lines: list[str] = []
    fast: list[str] = []
    pattern: list[str] = []
    groups: list[str] = []
    tree: dict[str, Any] = {}
    for index, (path, word, type_) in enumerate(leaves):
        parts = path.split(".")
        for part in parts:
            if not part.isidentifier():
                raise EventDecodeError(f"ABI name {part!r} is not an identifier")
        lines.extend(_leaf_lines(f"v{index}", type_, word, f"c{index}", converters))
        if _DATA_WORD_RE.match(word):  # data words come in order, one after the other
            piece, value = _data_piece(type_, f"g{index}", f"c{index}", converters)
            pattern.append(piece)
            groups.append(f"g{index}")
            fast.append(f"    v{index} = {value}")
        else:
            fast.extend(_leaf_lines(f"v{index}", type_, word, f"c{index}", converters))
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = (f"v{index}", type_)

    def render(node: Mapping[str, Any]) -> tuple[str, str]:
        """(the args dict's Python, the f-string body of their JSON text: braces doubled)"""
        python: list[str] = []
        template: list[str] = []
        for key, value in node.items():
            if isinstance(value, dict):
                inner_python, inner_template = render(value)
                python.append(f"{key!r}: {inner_python}")
                template.append(f'"{key}":{inner_template}')
            else:
                variable, type_ = value
                python.append(f"{key!r}: {variable}")
                template.append(f'"{key}":{_json_piece(type_, variable)}')
        return "{" + ", ".join(python) + "}", "{{" + ",".join(template) + "}}"

    python, template = render(tree)
    # An f-string, not a `%` template: `%` parsed its ~20 conversions at every call
    # (AccessRecorded: ~15,700 instructions of the fetch workers' ~114,000 per event).
    # Keys are identifiers (checked above), pieces variables: no quote nor backslash inside.
    text = f"f'{template}'"
    flat = "".join(f"v{index}, " for index in range(len(leaves)))
    returns = {"decode": f"{python}, {text}", "values": f"({flat}), {text}"}
    source = ""
    for name, result in returns.items():
        body = "\n".join(lines) if lines else "    pass"
        source += f"def _slow_{name}(t, d):\n{body}\n    return {result}\n"
        if not groups:
            source += f"{name} = _slow_{name}\n"
            continue
        unpack = ", ".join(groups) + ("," if len(groups) == 1 else "")
        source += (
            f"def {name}(t, d):\n    m = _match(d)\n    if m is None:\n"
            f"        return _slow_{name}(t, d)\n    {unpack} = m.groups()\n"
            + "\n".join(fast) + f"\n    return {result}\n"
        )  # fmt: skip
    namespace: dict[str, Any] = {
        **converters,
        "EventDecodeError": EventDecodeError,
        "_BYTE": _BYTE,
        "_JSON_BOOL": _JSON_BOOL,
        "_match": re.compile("".join(pattern), re.DOTALL).fullmatch,
    }
    code = compile(source, "<audit.events generated decoder>", "exec")
    exec(code, namespace)  # noqa: S102 - source from the ABI only, see the docstring
    decoder: StaticDecoder = namespace["decode"]
    values: StaticValues = namespace["values"]
    return decoder, values


def _is_word_array(param: Mapping[str, Any]) -> bool:
    """`T[]` of an elementary static T (uint, int, address, bool, bytesN): a length and words."""
    array = _ARRAY_RE.match(param["type"])
    if not array or array.group(2):
        return False
    inner = array.group(1)
    return not (_ARRAY_RE.match(inner) or inner.startswith("tuple") or inner in ("string", "bytes"))


def _is_record_array(param: Mapping[str, Any]) -> bool:
    """`(T1,..,Tn)[]` of elementary static components: a length and n words per element
    (ArtifactRegistered's ReleaseRef[])."""
    array = _ARRAY_RE.match(param["type"])
    if not array or array.group(2) or array.group(1) != "tuple":
        return False
    return all(
        not _ARRAY_RE.match(c["type"]) and c["type"] not in ("tuple", "string", "bytes")
        for c in param["components"]
    )


def _is_word_shaped(param: Mapping[str, Any]) -> bool:
    """Static words, word arrays and arrays of flat static records only, at any tuple depth:
    what `_generate_word_decoder` decodes (no strings, bytes or nested arrays)."""
    if _ARRAY_RE.match(param["type"]):
        return _is_word_array(param) or _is_record_array(param)
    if param["type"] == "tuple":
        return all(_is_word_shaped(c) for c in param["components"])
    return param["type"] not in ("string", "bytes")


def _head_words(param: Mapping[str, Any]) -> int:
    """Words a value takes in its enclosing head: a static tuple inline, anything dynamic an
    offset word."""
    if param["type"] == "tuple" and _is_static(param):
        return sum(_head_words(c) for c in param["components"])
    return 1


def _offset(word: str, base: int, need: int, total: int) -> int:
    """The hex position a head's offset word points at (relative to `base`), with `need` hex
    characters readable there: eth-abi reads past the data as an error, so do we."""
    value = int(word, 16)
    if value > total:
        raise EventDecodeError(f"offset {value} beyond the data")
    at = base + 2 * value
    if at + need > total:
        raise EventDecodeError(f"offset {value} leaves no room for {need // 2} bytes")
    return at


def _count(word: str, at: int, total: int, width: int = 1) -> int:
    """The length word of an array at hex position `at`, its elements (`width` words each)
    inside the data."""
    count = int(word, 16)
    if count > total or at + _WORD + count * width * _WORD > total:
        raise EventDecodeError(f"array of {count} x {width} words overruns the data")
    return count


class _WordDecoderSource:
    """Python source of a decoder for word-shaped data (see `_generate_word_decoder`)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.converters: dict[str, Callable[[str], Any]] = {}
        self.names = 0

    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def converter(self, type_: str) -> str:
        name = self.fresh("c")
        self.converters[name] = _word_converter(type_)
        return name

    def elementary(self, type_: str, word: str) -> tuple[str, str]:
        variable = self.fresh("v")
        if type_ == "bytes32":
            self.lines.append(f'    {variable} = "0x" + {word}')
        else:
            self.lines.append(f"    {variable} = {self.converter(type_)}({word})")
        ints = _int_bits(type_)
        if ints is not None and ints[1] <= 64:
            return variable, f"str({variable})"
        if type_ == "bool":
            return variable, f'("true" if {variable} else "false")'
        return variable, f"'\"' + {variable} + '\"'"

    def records(
        self, components: Sequence[Mapping[str, Any]], word: str, base: str
    ) -> tuple[str, str]:
        """An array of flat static tuples: a length, then each element's words inline."""
        width = len(components)
        at, count, variable = self.fresh("o"), self.fresh("n"), self.fresh("v")
        self.lines.append(f"    {at} = _offset({word}, {base}, {_WORD}, total)")
        self.lines.append(f"    {count} = _count(d[{at}:{at} + {_WORD}], {at}, total, {width})")
        python: list[str] = []
        rendered: list[str] = []
        for n, component in enumerate(components):
            name = component["name"]
            if not str(name).isidentifier():
                raise EventDecodeError(f"ABI name {name!r} is not an identifier")
            type_ = component["type"]
            piece = f"d[i + {n * _WORD}:i + {(n + 1) * _WORD}]"
            if type_ == "bytes32":
                python.append(f'{name!r}: "0x" + {piece}')
            else:
                python.append(f"{name!r}: {self.converter(type_)}({piece})")
            ints = _int_bits(type_)
            if ints is not None and ints[1] <= 64:
                value = f"str(x[{name!r}])"
            elif type_ == "bool":
                value = f'("true" if x[{name!r}] else "false")'
            else:
                value = f"'\"' + x[{name!r}] + '\"'"
            prefix = "{" if n == 0 else ","
            rendered.append(f"'{prefix}\"{name}\":' + {value}")
        step = width * _WORD
        span = f"range({at} + {_WORD}, {at} + {_WORD} + {step} * {count}, {step})"
        self.lines.append(f"    {variable} = [{{{', '.join(python)}}} for i in {span}]")
        item = " + ".join(rendered) + " + '}'" if rendered else "'{}'"
        return variable, f'"[" + ",".join([{item} for x in {variable}]) + "]"'

    def array(self, type_: str, word: str, base: str) -> tuple[str, str]:
        inner = type_[:-2]
        at, count, variable = self.fresh("o"), self.fresh("n"), self.fresh("v")
        self.lines.append(f"    {at} = _offset({word}, {base}, {_WORD}, total)")
        self.lines.append(f"    {count} = _count(d[{at}:{at} + {_WORD}], {at}, total)")
        span = f"range({at} + {_WORD}, {at} + {_WORD} + {_WORD} * {count}, {_WORD})"
        if inner == "bytes32":
            self.lines.append(f'    {variable} = ["0x" + d[i:i + {_WORD}] for i in {span}]')
        else:
            convert = self.converter(inner)
            self.lines.append(f"    {variable} = [{convert}(d[i:i + {_WORD}]) for i in {span}]")
        ints = _int_bits(inner)
        if ints is not None and ints[1] <= 64:
            item = "str(x)"
        elif inner == "bool":
            item = '("true" if x else "false")'
        else:
            item = "'\"' + x + '\"'"
        return variable, f'"[" + ",".join([{item} for x in {variable}]) + "]"'

    def tuple_at(
        self, components: Sequence[Mapping[str, Any]], base: str, first: int
    ) -> tuple[str, str]:
        """A tuple whose head starts at word `first` after hex position `base`."""
        python: list[str] = []
        json_parts: list[str] = []
        at = first
        for component in components:
            name = component["name"]
            if not str(name).isidentifier():
                raise EventDecodeError(f"ABI name {name!r} is not an identifier")
            variable, rendered = self.value(component, base, at)
            python.append(f"{name!r}: {variable}")
            json_parts.append(f"'\"{name}\":' + {rendered}")
            at += _head_words(component)
        joined = " + ',' + ".join(json_parts) if json_parts else "''"
        return "{" + ", ".join(python) + "}", f"'{{' + {joined} + '}}'"

    def value(self, param: Mapping[str, Any], base: str, at: int) -> tuple[str, str]:
        word = f"d[{base} + {at * _WORD}:{base} + {(at + 1) * _WORD}]"
        type_: str = param["type"]
        if _ARRAY_RE.match(type_):
            if _is_record_array(param):
                return self.records(param["components"], word, base)
            return self.array(type_, word, base)
        if type_ == "tuple":
            if _is_static(param):
                return self.tuple_at(param["components"], base, at)
            start = self.fresh("o")
            need = _WORD * sum(_head_words(c) for c in param["components"])
            self.lines.append(f"    {start} = _offset({word}, {base}, {need}, total)")
            return self.tuple_at(param["components"], start, 0)
        return self.elementary(type_, word)


def _generate_word_decoder(inputs: Sequence[Mapping[str, Any]]) -> StaticDecoder:
    """Compiles the decoder of an event whose data is word-shaped (`_is_word_shaped`).

    Like `_generate_static_decoder`, with offsets and array lengths read as eth-abi reads
    them: relative to the enclosing tuple, every read inside the data (a short or lying
    encoding is an EventDecodeError, never a silently short slice). The source is built from
    ABI identifiers and integers only, never from log contents.
    """
    source = _WordDecoderSource()
    data = [p for p in inputs if not p.get("indexed")]
    head = _WORD * sum(_head_words(p) for p in data)
    source.lines.append("    total = len(d)")
    source.lines.append(
        f"    if total < {head}: raise EventDecodeError('data shorter than its head')"
    )
    python: list[str] = []
    json_parts: list[str] = []
    topic, at = 0, 0
    for param in inputs:
        name = param["name"]
        if not str(name).isidentifier():
            raise EventDecodeError(f"ABI name {name!r} is not an identifier")
        if param.get("indexed"):
            topic += 1
            elementary = _is_static(param) and param["type"] != "tuple"
            type_ = param["type"] if elementary else "bytes32"
            variable, rendered = source.elementary(type_, f"t[{topic}][2:]")
        else:
            variable, rendered = source.value(param, "0", at)
            at += _head_words(param)
        python.append(f"{name!r}: {variable}")
        json_parts.append(f"'\"{name}\":' + {rendered}")
    joined = " + ',' + ".join(json_parts) if json_parts else "''"
    body = "\n".join(source.lines)
    text_ = (
        f"def decode(t, d):\n{body}\n    return {{{', '.join(python)}}}, '{{' + {joined} + '}}'\n"
    )
    namespace: dict[str, Any] = {
        **source.converters,
        "_offset": _offset,
        "_count": _count,
        "EventDecodeError": EventDecodeError,
    }
    exec(compile(text_, "<audit.events generated word decoder>", "exec"), namespace)  # noqa: S102 - source from the ABI only, see the docstring
    decoder: StaticDecoder = namespace["decode"]
    return decoder


def args_json(args: Mapping[str, Any]) -> str:
    """The stored JSON text of decoded args (what the generated decoders render directly)."""
    return json.dumps(args, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class EventSpec:
    """One event of one contract, compiled for decoding."""

    contract: str
    name: str
    signature: str
    topic0: str
    indexed: tuple[tuple[str, Callable[[str], Any]], ...]
    data_params: tuple[Mapping[str, Any], ...]
    data_types: tuple[str, ...]
    static_words: int | None
    """Words of the data part when every data parameter is static (the fast path), else None."""
    static_decoder: StaticDecoder | None
    word_decoder: StaticDecoder | None
    """Generated decoder of data with word arrays (and no strings or bytes), else None."""
    order: tuple[str, ...]
    """Argument names in declaration order, so `args` reads like the Solidity event."""
    static_values: StaticValues | None = None
    """The static decoder's twin giving the values flat (`decode_values`), else None."""
    leaves: tuple[str, ...] = ()
    """Dotted paths into `args` of the values `decode_values` gives, in its order."""

    def decode_args(self, topics: Sequence[str], data: str) -> tuple[dict[str, Any], str]:
        """(args, their JSON text) from the log's topics and data (0x hex)."""
        body = self._body(topics, data)
        if self.static_decoder is not None and self.static_words is not None:
            return self.static_decoder([t.lower() for t in topics], self._static(body))
        if self.word_decoder is not None:
            return self.word_decoder([t.lower() for t in topics], body)
        values: dict[str, Any] = {}
        for (name, convert), topic in zip(self.indexed, topics[1:], strict=False):
            values[name] = convert(topic[2:].lower())
        if self.data_types:
            try:
                decoded = abi_decode(list(self.data_types), bytes.fromhex(body), strict=True)
            except (DecodingError, ValueError, OverflowError) as exc:
                raise EventDecodeError(f"{self.name}: {exc}") from exc
            for param, value in zip(self.data_params, decoded, strict=True):
                values[param["name"]] = _plain(param, value)
        args = {name: values[name] for name in self.order}
        return args, args_json(args)

    def decode_values(self, topics: Sequence[str], data: str) -> tuple[tuple[Any, ...], str]:
        """(the values at `leaves`, the args' JSON text) of an event with static data only
        (`static_values`): what `decode_args` gives, checked the same, without the dicts."""
        if self.static_values is None:
            raise EventDecodeError(f"{self.name}: its data is not static")
        body = self._static(self._body(topics, data))
        return self.static_values([t.lower() for t in topics], body)

    def _body(self, topics: Sequence[str], data: str) -> str:
        """The data's hex digits, lowercase, once the topics are counted."""
        if len(topics) != len(self.indexed) + 1:
            raise EventDecodeError(
                f"{self.name}: {len(topics) - 1} indexed topics, expected {len(self.indexed)}"
            )
        return (data[2:] if data.startswith("0x") else data).lower()

    def _static(self, body: str) -> str:
        if self.static_words is None or len(body) != self.static_words * _WORD:
            raise EventDecodeError(
                f"{self.name}: data of {len(body) // 2} bytes, "
                f"expected {(self.static_words or 0) * 32}"
            )
        return body


def compile_event(contract: str, abi_event: Mapping[str, Any]) -> EventSpec:
    inputs: list[Mapping[str, Any]] = list(abi_event["inputs"])
    binding = EventBinding.of(contract, abi_event)
    indexed: list[tuple[str, Callable[[str], Any]]] = []
    data_params: list[Mapping[str, Any]] = []
    for param in inputs:
        if param.get("indexed"):
            if _is_static(param) and param["type"] != "tuple":
                indexed.append((param["name"], _word_converter(param["type"])))
            else:  # a dynamic indexed value is only its keccak hash
                indexed.append((param["name"], lambda topic: "0x" + topic))
        else:
            data_params.append(param)
    static_words: int | None = None
    decoder: StaticDecoder | None = None
    values: StaticValues | None = None
    paths: tuple[str, ...] = ()
    word_decoder: StaticDecoder | None = None
    if not all(_is_static(p) for p in data_params) and all(_is_word_shaped(p) for p in data_params):
        word_decoder = _generate_word_decoder(inputs)
    if all(_is_static(p) for p in data_params):
        leaves: list[_Leaf] = []
        static_words = 0
        topic = 0
        for param in inputs:
            if param.get("indexed"):
                topic += 1
                elementary = _is_static(param) and param["type"] != "tuple"
                # a dynamic indexed value is only its keccak hash: kept as bytes32 hex
                type_ = param["type"] if elementary else "bytes32"
                leaves.append((param["name"], f"t[{topic}][2:]", type_))
            else:
                static_words = _static_leaves(param, param["name"], static_words, leaves)
        decoder, values = _generate_static_decoder(leaves)
        paths = tuple(path for path, _, _ in leaves)
    return EventSpec(
        contract=contract,
        name=abi_event["name"],
        signature=binding.signature,
        topic0=binding.topic_hex,
        indexed=tuple(indexed),
        data_params=tuple(data_params),
        data_types=binding.data_types,
        static_words=static_words,
        static_decoder=decoder,
        word_decoder=word_decoder,
        order=tuple(p["name"] for p in inputs),
        static_values=values,
        leaves=paths,
    )


class EventDecoder:
    """topic0 -> spec tables for the audited contracts at their deployed addresses.

    `addresses` maps contract name -> address; a log from an address not listed, or with a
    topic0 its contract does not declare, is an error rather than a skip: the indexer asks the
    node only for these addresses, so anything else means the node or the ABI drifted.
    """

    def __init__(
        self,
        addresses: Mapping[str, str],
        abis: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.contract_at: dict[str, str] = {a.lower(): name for name, a in addresses.items()}
        self.specs: dict[str, dict[str, EventSpec]] = {}
        for name in addresses:
            abi = abis[name] if abis is not None else load(name).abi
            self.specs[name] = {
                spec.topic0: spec
                for spec in (compile_event(name, e) for e in abi if e["type"] == "event")
            }

    @property
    def addresses(self) -> list[str]:
        return sorted(self.contract_at)

    def spec_for(self, contract: str, event: str) -> EventSpec:
        for spec in self.specs[contract].values():
            if spec.name == event:
                return spec
        raise KeyError(f"{contract} declares no event {event}")

    def spec_of(self, log: Mapping[str, Any]) -> tuple[str, str, EventSpec]:
        """The address, contract and event spec of one `eth_getLogs` entry: the checks
        `decode` makes before the args."""
        # The node's own text is looked up first: nodes write lowercase hex, so the address
        # and topic0 are lowercased only when they miss (~1,000 instructions per log).
        raw = log["address"]
        try:
            contract = self.contract_at.get(raw)
        except TypeError:  # not text: refused below as before
            contract = None
        if contract is None:
            address = str(raw).lower()
            contract = self.contract_at.get(address)
            if contract is None:
                raise EventDecodeError(f"log from unexpected address {address}")
        else:
            address = raw
        topics: list[str] = log["topics"]
        if not topics:
            raise EventDecodeError(f"anonymous log from {contract} at {address}")
        specs = self.specs[contract]
        try:
            spec = specs.get(topics[0])
        except TypeError:
            spec = None
        if spec is None:
            spec = specs.get(topics[0].lower())
        if spec is None:
            raise EventDecodeError(f"{contract} declares no event with topic0 {topics[0]}")
        if log.get("removed"):
            raise EventDecodeError(f"{spec.name} log marked removed (reorged away)")
        return address, contract, spec

    def decode(self, log: Mapping[str, Any]) -> DecodedEvent:
        """One `eth_getLogs` entry (JSON-RPC form, hex strings) -> DecodedEvent."""
        address, contract, spec = self.spec_of(log)
        args, text = spec.decode_args(log["topics"], log["data"])
        timestamp = log.get("blockTimestamp")
        return DecodedEvent(
            block_number=int(log["blockNumber"], 16),
            tx_index=int(log["transactionIndex"], 16),
            log_index=int(log["logIndex"], 16),
            block_hash=str(log["blockHash"]).lower(),
            tx_hash=str(log["transactionHash"]).lower(),
            address=address,
            contract=contract,
            name=spec.name,
            args=args,
            args_json=text,
            block_timestamp=None if timestamp is None else int(timestamp, 16),
        )
