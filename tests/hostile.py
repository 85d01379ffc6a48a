"""Hostile input: an independent model of how the job reads one Kafka message, and hypothesis
strategies that generate messages meant to break it.

The model follows the parts the job is built from rather than the job's code: Jackson's choice
of encoding and its UTF-8 reader (which the telemetry-json format shares with Flink's JSON
format), its limits (nesting depth, number length), Flink's casts from text (BIGINT: trimmed
spaces, a decimal part dropped; DOUBLE: Java's Double.parseDouble), and the checks in their
order (the format's, jvm/, then the time's plausibility, sql/flink/checked_events.sql).
``verdict(value)`` says what must become of a message: a dead letter with its reason, or a
good event with the fields the job reads.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import unicodedata
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from common.features import METRIC_NAMES, METRICS

# How every hostile-input campaign runs hypothesis: derandomized, no example database, no
# deadline or health checks (the examples are built for size and oddness); max_examples apart.
CAMPAIGN = settings(
    deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)

MAX_DEVICE_ID_LENGTH = 128
MAX_CLOCK_SKEW_MS = 600_000
# Jackson's StreamReadConstraints defaults (the version Flink shades).
MAX_NESTING_DEPTH = 1000
MAX_NUMBER_LENGTH = 1000
SOURCE_FIELDS = ("device_id", "ts_ms", *METRIC_NAMES)


class NotAJsonObject(Exception):
    pass


class Number(str):
    """A JSON number as its token text (Flink's JSON format reads it as text)."""


def _refuse_constant(token: str):
    raise NotAJsonObject(f"{token} is not JSON")


class Pairs(list):
    """A JSON object as its (key, value) pairs in order, repeated keys included."""

    def as_dict(self) -> dict:
        return {k: v.as_dict() if isinstance(v, Pairs) else v for k, v in self}


# strict=False: Flink's JSON format lets control characters stand unescaped inside strings.
_DECODER = json.JSONDecoder(
    object_pairs_hook=Pairs,
    parse_float=Number,
    parse_int=Number,
    parse_constant=_refuse_constant,
    strict=False,
)


# --- bytes -> text, as Jackson's ByteSourceJsonBootstrapper and UTF-8 reader do -------------


def _lenient_utf8(data: bytes) -> tuple[str, int | None]:
    """Jackson's UTF-8 reading: a lead byte and its continuation bytes make one character
    (overlong forms and surrogates pass); a byte F8-FF, a stray continuation byte or a short
    sequence is an error. Returns the text (U+FFFD at errors) and the index in it of the first
    error (None: none)."""
    try:
        # Valid UTF-8 (no overlong form, no surrogate) reads the same either way, and Python's
        # decoder takes 0.04 ms for a 200 KiB message where the loop below takes 142 ms.
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    first_bad = None
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        need = 0 if b < 0x80 else 1 if 0xC0 <= b <= 0xDF else 2 if 0xE0 <= b <= 0xEF else 3
        if 0x80 <= b <= 0xBF or b >= 0xF8:
            need = -1
        tail = data[i + 1 : i + 1 + max(need, 0)]
        if need < 0 or len(tail) < need or any(c & 0xC0 != 0x80 for c in tail):
            first_bad = len(out) if first_bad is None else first_bad
            out.append("\ufffd")
            i += 1
            continue
        if need == 0:
            out.append(chr(b))
        else:
            cp = b & (0x3F >> need)
            for c in tail:
                cp = (cp << 6) | (c & 0x3F)
            out.append(chr(cp) if cp <= 0x10FFFF else "\ufffd")
        i += 1 + need
    return "".join(out), first_bad


def jackson_text(value: bytes) -> tuple[str, int | None] | None:
    """The text Jackson parses a message as, with the index of its first UTF-8 error; None
    when it refuses the bytes outright."""
    head = value[:4]

    def wide(data: bytes, codec: str) -> tuple[str, None] | None:
        try:
            return data.decode(codec, errors="strict" if "32" in codec else "replace"), None
        except UnicodeDecodeError:
            return None

    if len(value) >= 4:
        if head == b"\x00\x00\xfe\xff":
            return wide(value[4:], "utf-32-be")
        if head == b"\xff\xfe\x00\x00":
            return wide(value[4:], "utf-32-le")
        if head in (b"\x00\x00\xff\xfe", b"\xfe\xff\x00\x00"):
            return None
        if head[:2] == b"\xfe\xff":
            return wide(value[2:], "utf-16-be")
        if head[:2] == b"\xff\xfe":
            return wide(value[2:], "utf-16-le")
        if head[:3] == b"\xef\xbb\xbf":
            return _lenient_utf8(value[3:])
        if head[:3] == b"\x00\x00\x00":
            return wide(value, "utf-32-be")
        if head[1:] == b"\x00\x00\x00":
            return wide(value, "utf-32-le")
        if (head[0] == 0 and head[2:] == b"\x00\x00") or (head[:2] == b"\x00\x00" and head[3] == 0):
            return None
    if len(value) >= 2:
        if value[0] == 0:
            return wide(value, "utf-16-be")
        if value[1] == 0:
            return wide(value, "utf-16-le")
    return _lenient_utf8(value)


def _depth_and_numbers_ok(root) -> bool:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING_DEPTH:
            return False
        children = [v for _, v in node] if isinstance(node, Pairs) else node
        for child in children:
            if isinstance(child, list):
                stack.append((child, depth + 1))
    return True


_NUMBER_TOKEN = re.compile(r"-?[0-9][0-9.eE+-]{" + str(MAX_NUMBER_LENGTH) + ",}")


def parse_object(value: bytes) -> dict:
    """The fields the job reads from a message, or NotAJsonObject. The whole object is read
    (invalid UTF-8 anywhere in it refuses the message), nothing after it; a field given twice
    counts with its last value."""
    decoded = jackson_text(value)
    if decoded is None:
        raise NotAJsonObject("bytes Jackson refuses")
    text, first_bad = decoded
    start = len(text) - len(text.lstrip(" \t\n\r"))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        root, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise NotAJsonObject(str(exc)) from None
    finally:
        sys.setrecursionlimit(limit)
    if first_bad is not None and first_bad < end:
        raise NotAJsonObject("invalid UTF-8 inside the object")
    if _NUMBER_TOKEN.search(text, 0, end):  # Jackson refuses numbers over 1,000 characters
        raise NotAJsonObject("a number longer than Jackson takes")
    if not isinstance(root, Pairs) or not _depth_and_numbers_ok(root):
        raise NotAJsonObject("not an object, or beyond Jackson's limits")
    return {
        key: item.as_dict() if isinstance(item, Pairs) else item
        for key, item in root
        if key in SOURCE_FIELDS
    }


# --- text -> typed values, as the job's TRY_CASTs do -------------------------------------------

# Flink's cast takes a lone "." (or "-.") for 0.
_LONG = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]*)")
_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)"
)


def to_long(text: str) -> int | None:
    """TRY_CAST(text AS BIGINT): spaces trimmed, a decimal part dropped, NULL past 64 bits."""
    text = text.strip(" ")
    if not _LONG.fullmatch(text):
        return None
    whole = text.split(".")[0]
    number = int(whole) if whole.lstrip("+-") else 0
    return number if -(2**63) <= number < 2**63 else None


def to_double(text: str) -> float | None:
    """TRY_CAST(text AS DOUBLE): Java's Double.parseDouble (whitespace and controls trimmed)."""
    text = text.strip("".join(map(chr, range(0x21))))
    if not _DOUBLE.fullmatch(text):
        return None
    return float(text.rstrip("fFdD"))


def as_text(value) -> str | None:
    """A field as the job reads it: STRING columns take any JSON value as text."""
    if value is None:
        return None
    if isinstance(value, str):  # strings and number tokens
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Verdict:
    reason: str | None  # None: a good event
    device_id: str | None = None
    ts_ms: int | None = None
    metrics: tuple[float, ...] = ()
    device_is_text: bool = True  # device_id was a JSON string (its text is then exact)


def _device_problem(device: str) -> str | None:
    if not device.strip(" "):
        return "device_id: empty"
    if len(device) > MAX_DEVICE_ID_LENGTH:
        return f"device_id: longer than {MAX_DEVICE_ID_LENGTH} characters"
    categories = {unicodedata.category(c) for c in device}
    if "Cs" in categories:
        return "device_id: not valid Unicode (a lone surrogate)"
    if "Cc" in categories:
        return "device_id: contains a control character"
    return None


def verdict(value: bytes | None, now_ms: float | None = None) -> Verdict:
    """What the job must make of one message (``now_ms``: the broker's time of it)."""
    if value is None:
        return Verdict("empty message")
    try:
        event = parse_object(value)
    except NotAJsonObject:
        return Verdict("not a JSON object")
    device = as_text(event.get("device_id"))
    if device is None:
        return Verdict("device_id: missing or null")
    if problem := _device_problem(device):
        return Verdict(problem, device)
    ts_text = as_text(event.get("ts_ms"))
    if ts_text is None:
        return Verdict("ts_ms: missing or null", device)
    ts = to_long(ts_text)
    if ts is None:
        return Verdict("ts_ms: not an integer", device)
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    if not 0 <= ts <= 253_402_300_799_999 or ts > now_ms + MAX_CLOCK_SKEW_MS:
        return Verdict("ts_ms: before 1970 or more than 600 s ahead of the broker", device, ts)
    values = []
    for m in METRICS:
        text = as_text(event.get(m.name))
        if text is None:
            return Verdict(f"{m.name}: missing or null", device, ts)
        number = to_double(text)
        if number is None:
            return Verdict(f"{m.name}: not a number", device, ts)
        if not math.isfinite(number):
            return Verdict(f"{m.name}: not a finite number", device, ts)
        if m.min is not None and number < m.min:
            return Verdict(f"{m.name}: below its minimum {m.min:g}", device, ts)
        if m.max is not None and number > m.max:
            return Verdict(f"{m.name}: above its maximum {m.max:g}", device, ts)
        values.append(number)
    return Verdict(
        None, device, ts, tuple(values), device_is_text=isinstance(event["device_id"], str)
    )


# --- strategies ------------------------------------------------------------------------------

# Characters that break naive code: NUL and other controls, lone surrogates, bidi marks,
# combining marks, emoji, byte-order marks, non-characters, the replacement character.
NASTY_CHARACTERS = [
    "\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f", "\ud800", "\udbff",
    "\udc00", "\udfff", "\u200b", "\u200e", "\u200f", "\u202e", "\u2066", "\u0301", "\u0308",
    "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0001f600", "\U0001f469\u200d\U0001f4bb",
    "\U0010ffff", "é", "ß", "日本", "עברית", "'", '"', "\\", "%", "_", "' OR 1=1 --", " ",
]  # fmt: skip

# Number tokens at every edge, written as they would appear in the JSON text.
EDGE_NUMBERS = [
    "0", "-0", "-0.0", "0.0", "1", "-1", "5e-324", "-5e-324", "4.9E-324", "2.2250738585072014e-308",
    "1.7976931348623157e308", "1.8e308", "-1.8e308", "1e999", "-1e999", "1e-999",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "1" + "0" * 400, "0.1", "1.5e3", "1E+2", "100", "100.0000000001",
    "99.99999999999999", "NaN", "Infinity", "-Infinity", "nan", "inf", "01", "1.", ".5", "+1",
    "0x10", "1_000",
]  # fmt: skip

# The same numbers as JSON strings (the job reads text fields too).
EDGE_NUMBER_TEXTS = [
    *EDGE_NUMBERS,
    " 1",
    "1 ",
    "\t1",
    "1.5f",
    "1.5d",
    "١٢",
    "1,5",
    "",
    " ",
    "-",
    ".",
    "+",
    "e5",
]


def _good_event(ts_ms: int) -> dict:
    event: dict = {"device_id": "hostile-dev", "ts_ms": ts_ms}
    for m in METRICS:
        low = m.min if m.min is not None else 0.0
        high = m.max if m.max is not None else low + 100.0
        event[m.name] = round(low + (high - low) / 2, 3)
    return event


def nasty_text() -> st.SearchStrategy[str]:
    """Text mixing arbitrary Unicode (surrogates included) with the nasty characters."""
    any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
    return st.lists(st.one_of(any_char, st.sampled_from(NASTY_CHARACTERS)), max_size=12).map(
        "".join
    )


def json_value() -> st.SearchStrategy:
    """Any JSON value: text, numbers, booleans, null, small arrays and objects."""
    leaf = st.one_of(
        nasty_text(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(nasty_text(), inner, max_size=3)
        ),
        max_leaves=6,
    )


def _encode(event: dict, ensure_ascii: bool) -> bytes:
    text = json.dumps(event, ensure_ascii=ensure_ascii)
    # Raw lone surrogates go out as their 3-byte forms (CESU-8), as Java's modified UTF-8 does.
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def unicode_events(draw, ts_ms: int) -> bytes:
    """A good event with one or two fields (or an extra one) replaced by arbitrary values."""
    event = _good_event(ts_ms)
    for _ in range(draw(st.integers(1, 2))):
        field = draw(st.sampled_from([*SOURCE_FIELDS, "scenario", "extra"]))
        event[field] = draw(st.one_of(nasty_text(), json_value()))
    if draw(st.booleans()):
        event["device_id"] = draw(nasty_text())
    return _encode(event, ensure_ascii=draw(st.booleans()))


@st.composite
def edge_number_events(draw, ts_ms: int) -> bytes:
    """A good event with an edge number (as a token or as text) in a metric or ts_ms."""
    event = _good_event(ts_ms)
    field = draw(st.sampled_from(["ts_ms", *METRIC_NAMES]))
    if draw(st.booleans()):
        placeholder = "__EDGE__"
        event[field] = placeholder
        token = draw(st.sampled_from(EDGE_NUMBERS))
        return json.dumps(event).replace(f'"{placeholder}"', token).encode()
    event[field] = draw(st.sampled_from(EDGE_NUMBER_TEXTS))
    return json.dumps(event).encode()


@st.composite
def structural_messages(draw, ts_ms: int) -> bytes | None:
    """Deep nesting, huge arrays, duplicate keys, byte-order marks and other encodings,
    trailing garbage, empty and tombstone values."""
    event = _good_event(ts_ms)
    body = json.dumps(event)
    kind = draw(
        st.sampled_from(
            [
                "deep", "huge_array", "duplicate_keys", "bom", "utf16", "utf32", "trailing",
                "empty", "tombstone", "whitespace", "truncated", "top_level",
            ]
        )
    )  # fmt: skip
    if kind == "deep":
        depth = draw(st.one_of(st.integers(1, 1100), st.sampled_from([998, 999, 1000, 5000])))
        nested = "[" * depth + "]" * depth
        return (body[:-1] + f', "extra": {nested}}}').encode()
    if kind == "huge_array":
        n = draw(st.integers(1000, 60_000))
        return (body[:-1] + ', "extra": [' + ",".join(["1"] * n) + "]}").encode()
    if kind == "duplicate_keys":
        field = draw(st.sampled_from(SOURCE_FIELDS))
        other = json.dumps(draw(json_value()))
        first = draw(st.booleans())
        return ("{" + (f'"{field}": {other}, ' if first else "") + body[1:-1]
                + ("" if first else f', "{field}": {other}') + "}").encode()  # fmt: skip
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"])) + body.encode()
    if kind == "utf16":
        return body.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be"])))
    if kind == "utf32":
        return body.encode(draw(st.sampled_from(["utf-32", "utf-32-le", "utf-32-be"])))
    if kind == "trailing":
        garbage = draw(st.one_of(st.binary(max_size=20), st.text(max_size=20).map(str.encode)))
        return body.encode() + garbage
    if kind == "empty":
        return b""
    if kind == "tombstone":
        return None
    if kind == "whitespace":
        return draw(st.sampled_from([b" ", b"\n", b"\t\r\n ", b" " * 1000]))
    if kind == "truncated":
        raw = body.encode()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    return draw(st.sampled_from([b"[]", b"null", b'"x"', b"1", b"true", b"[{}]"]))


def raw_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, sometimes behind a '{' so that they reach further into the parser."""
    return st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b"{" + b),
        st.binary(max_size=60).map(lambda b: b'{"device_id": "' + b + b'"}'),
    )
