"""The webhook body parser: any bytes give a storable JSON object or a 400 detail."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from live.webhook_body import MAX_DEPTH, BadBody, parse_body

ALERT = (b'{"secret": "s3cret", "type": "BASE_ENTRY", "instrument": "GOLD_MINI", '
         b'"position": "Long_1", "price": 78500.5, "stop": 77800, "lots": 1, "atr": 700, '
         b'"er": 0.82, "supertrend": 77000, "timestamp": "2026-11-20T10:30:00"}')


def detail_of(body: bytes) -> str:
    with pytest.raises(BadBody) as caught:
        parse_body(body)
    return caught.value.detail


def nested(depth: int, inner: str = "1") -> bytes:
    """An object whose field holds `depth - 1` nested arrays: `depth` levels in all."""
    return ('{"a": ' + "[" * (depth - 1) + inner + "]" * (depth - 1) + "}").encode()


def test_a_tradingview_alert_parses_with_exact_decimals():
    payload = parse_body(ALERT)
    assert payload["price"] == D("78500.5") and isinstance(payload["price"], D)
    assert payload["er"] == D("0.82")
    assert payload["stop"] == 77800 and type(payload["stop"]) is int
    assert payload["timestamp"] == "2026-11-20T10:30:00"


def test_a_leading_utf8_bom_is_accepted_as_before():
    assert parse_body(b"\xef\xbb\xbf" + ALERT)["type"] == "BASE_ENTRY"


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"a": 1', b'{"a": 1}}', b"{'a': 1}",
                                  b'{"a": "raw\ncontrol"}', b'{"a": "\\x"}'])
def test_a_syntax_error_is_exactly_invalid_json(body):
    assert detail_of(body) == "Invalid JSON"


@pytest.mark.parametrize("body", [b"[]", b'[{"secret": "s3cret"}]', b'"text"', b"42", b"1.5",
                                  b"null", b"true"])
def test_a_value_that_is_not_an_object_is_refused(body):
    assert detail_of(body) == "Invalid JSON: expected an object"


def test_nesting_up_to_the_limit_is_accepted():
    assert parse_body(nested(MAX_DEPTH))["a"]


@pytest.mark.parametrize("inner", ["1", "{}", '{"b": []}'])
def test_nesting_past_the_limit_is_refused(inner):
    assert detail_of(nested(MAX_DEPTH + 1, inner)) == "Invalid JSON: nested too deeply"


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_nesting_that_exhausts_the_parser_is_refused(depth):
    assert detail_of(b"[" * depth + b"]" * depth) in (
        "Invalid JSON: nested too deeply", "Invalid JSON: expected an object")
    assert detail_of(nested(depth)) == "Invalid JSON: nested too deeply"
    assert detail_of(b'{"a": ' * depth + b"1" + b"}" * depth) == (
        "Invalid JSON: nested too deeply")


@pytest.mark.parametrize("body", [
    b'{"reason": "a\\u0000b"}',                        # in a field the alert uses
    b'{"type": "EXIT", "note\\u0000": 1}',               # in a key
    b'{"type": "EXIT", "comment": "\\u0000"}',           # in an unused extra field
    b'{"extra": {"deep": ["x", {"y": "\\u0000"}]}}',   # nested
    b'{"secret": "s3cret\\u0000"}',
])
def test_nul_anywhere_is_refused(body):
    assert detail_of(body) == "Invalid JSON: string contains U+0000"


@pytest.mark.parametrize(("body", "code"), [
    (b'{"reason": "\\ud800"}', "D800"),
    (b'{"reason": "x\\udfff"}', "DFFF"),
    (b'{"\\udc00": 1}', "DC00"),
    (b'{"extra": [["\\ude00\\ud83d"]]}', "DE00"),      # a pair in the wrong order
    (b'{"reason": "\\ud83d"}', "D83D"),                 # a high half without its low half
])
def test_an_escaped_lone_surrogate_is_refused(body, code):
    assert detail_of(body) == f"Invalid JSON: string contains a lone surrogate U+{code}"


def test_an_escaped_surrogate_pair_is_one_character_and_fine():
    assert parse_body(b'{"reason": "\\ud83d\\ude00"}')["reason"] == "\U0001f600"


@pytest.mark.parametrize("body", [
    b'{"reason": "\xed\xa0\x80"}',     # a surrogate encoded as UTF-8 (CESU-8, WTF-8)
    b'{"reason": "\xff"}',
    b'{"reason": "\xc3"}',             # truncated sequence
    b'{"reason": "\xc0\xaf"}',         # overlong encoding
    b'{"reason": "\xf4\x90\x80\x80"}',  # beyond U+10FFFF
    '{"reason": "x"}'.encode("utf-16"),
    b"\xfe\xff",
])
def test_bytes_that_are_not_utf8_are_refused(body):
    assert detail_of(body) == "Invalid JSON: not UTF-8"


def test_non_ascii_utf8_is_fine():
    assert parse_body('{"reason": "सोना ↑ €"}'.encode())["reason"] == "सोना ↑ €"


@pytest.mark.parametrize("number", ["1e999999", "-1e999999", "1e-999999", "0e999999"])
def test_a_huge_exponent_stays_an_exact_decimal(number):
    # Not refused here: the field rules reject it as "Invalid price" and the like.
    assert parse_body(f'{{"price": {number}}}'.encode())["price"] == D(number)


@pytest.mark.parametrize("number", ["1e1000000000000000000", "1e-99999999999999999999",
                                    "0e99999999999999999999"])
def test_an_exponent_beyond_decimal_range_is_refused(number):
    assert detail_of(f'{{"price": {number}}}'.encode()) == "Invalid JSON: number out of range"


@pytest.mark.parametrize("digits", [5000, 4301])
def test_an_integer_too_long_to_convert_safely_is_refused(digits):
    assert detail_of(b'{"lots": ' + b"9" * digits + b"}") == "Invalid JSON: number too long"
    assert detail_of(b'{"lots": -' + b"9" * digits + b"}") == "Invalid JSON: number too long"


def test_a_long_integer_within_the_limit_is_kept_exact():
    assert parse_body(b'{"lots": ' + b"9" * 4300 + b"}")["lots"] == int("9" * 4300)


def test_a_long_fraction_is_kept_exact():
    text = "1." + "3" * 5000
    assert parse_body(f'{{"price": {text}}}'.encode())["price"] == D(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant):
    assert detail_of(f'{{"price": {constant}}}'.encode()) == (
        f"Invalid JSON: {constant} is not a number")
    assert detail_of(f'{{"x": [{{"y": {constant}}}]}}'.encode()).startswith("Invalid JSON")


@pytest.mark.parametrize("body", [
    b'{"price": 1, "price": 2}',
    b'{"secret": "s3cret", "secret": "other"}',
    b'{"extra": {"a": 1, "a": 1}}',
    b'{"list": [{"k": null, "k": null}]}',
])
def test_duplicate_keys_are_refused(body):
    assert detail_of(body) == "Invalid JSON: duplicate key"


def test_keys_differing_in_case_are_not_duplicates():
    assert parse_body(b'{"price": 1, "Price": 2}') == {"price": 1, "Price": 2}


def test_booleans_where_numbers_belong_parse_and_are_left_to_validation():
    payload = parse_body(b'{"price": true, "lots": false, "stop": null}')
    assert payload == {"price": True, "lots": False, "stop": None}
    assert payload["price"] is True


def test_a_very_long_string_is_kept():
    text = "x" * 1_000_000
    assert parse_body(json.dumps({"reason": text}).encode())["reason"] == text


def test_unknown_extra_fields_are_kept():
    body = json.loads(ALERT)
    body.update(comment="from TradingView", tags=["a", "b"], meta={"v": 2, "ok": True})
    payload = parse_body(json.dumps(body).encode())
    assert payload["comment"] == "from TradingView"
    assert payload["meta"] == {"v": 2, "ok": True}


def test_every_detail_keeps_the_invalid_json_prefix():
    bodies = [b"[]", nested(MAX_DEPTH + 1), b'{"a": "\\u0000"}', b'{"a": "\\ud800"}', b"\xff",
              b'{"a": NaN}', b'{"a": 1, "a": 2}', b'{"a": ' + b"1" * 5000 + b"}",
              b'{"a": 1e1000000000000000000}']
    for body in bodies:
        assert detail_of(body).startswith("Invalid JSON")


def test_bad_body_is_a_value_error_with_its_detail():
    error = BadBody("Invalid JSON: duplicate key")
    assert isinstance(error, ValueError)
    assert error.detail == str(error) == "Invalid JSON: duplicate key"
