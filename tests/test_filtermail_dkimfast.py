"""The dkimfast stand-ins give exactly what the dkimpy helpers they replace give: on fixed
cases, and on header blocks and tag lists damaged at random (same result, or both refuse)."""

import random
import re

import dkim
import pytest
from dkim.canonicalization import Relaxed
from dkim.util import InvalidTagValueList, parse_tag_value
from dkim_samples import damaged, rsa_key, sign
from filtermail_samples import plain_mail

from chatmaild.filtermail.dkimfast import (
    MalformedHeader,
    empty_b_value,
    header_fields,
    relaxed_field,
    select_fields,
    tag_list,
    unfold,
)
from chatmaild.filtermail.mime import split_header_block


def signed_block() -> bytes:
    mail = plain_mail(sender="alice@sender.example", to="bob@chat.example")
    signed = sign(mail, "sender.example", rsa_key("a"))
    return split_header_block(signed)[0]


def dkimpy_fields(block):
    try:
        return [tuple(f) for f in dkim.rfc822_parse(block)[0]]
    except (dkim.MessageFormatError, IndexError):
        return "refused"


def our_fields(block):
    try:
        return header_fields(block)
    except MalformedHeader:
        return "refused"


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"A: 1\r\n",
        b"A: 1\r\n\tmore\r\n B\r\nC:\r\n",
        b"From alice Mon Jan 1\r\nA: 1\r\n",
        b" leading continuation\r\nA: 1\r\n",
        b"no colon here\r\n",
        b"A: 1\nB: 2\n",
        b"A: 1\r\n\r\nB: after the end\r\n",
        b"Name With Space: x\r\n",
        b"A: 1\r\nFrom : skipped by dkimpy\r\n cont\r\n",
        b"A: 1\r\n\tx\r\nB: 2",
        b"A: 1\r\n\r",
        b"A: 1\r\n \r\n",
    ],
)
def test_header_fields(block):
    assert our_fields(block) == dkimpy_fields(block)


def test_header_fields_on_damaged_blocks():
    rng = random.Random(3)
    block = signed_block()
    outcomes = set()
    for _ in range(3000):
        mangled = damaged(block, rng)
        ours = our_fields(mangled)
        assert ours == dkimpy_fields(mangled), mangled
        outcomes.add(ours == "refused")
    assert outcomes == {True, False}


def dkimpy_tags(text):
    try:
        return parse_tag_value(text)
    except InvalidTagValueList as e:
        return type(e)


def our_tags(text):
    try:
        return tag_list(text)
    except InvalidTagValueList as e:
        return type(e)


@pytest.mark.parametrize(
    "text",
    [b"", b"a=1", b"a=1;", b" a = 1 ; b=2;;", b"a", b"1a=2", b"a=1; a=2", b"_a=1", b"a b=1"],
)
def test_tag_list(text):
    assert our_tags(text) == dkimpy_tags(text)


def test_tag_list_on_damaged_signatures():
    rng = random.Random(4)
    value = dict(dkim.rfc822_parse(signed_block())[0])[b"DKIM-Signature"]
    outcomes = set()
    for _ in range(3000):
        mangled = damaged(value, rng)
        ours = our_tags(mangled)
        assert ours == dkimpy_tags(mangled), mangled
        outcomes.add(isinstance(ours, dict))
    assert outcomes == {True, False}


FIELDS = [(b"From", b"1"), (b"To", b"a"), (b"Subject", b"s"), (b"to", b"b"), (b"TO", b"c")]


@pytest.mark.parametrize(
    "include",
    [
        [b"from", b"to", b"subject"],
        [b"to", b"to", b"to", b"to"],
        [b"from", b"from", b"x", b"to", b"from"],
        [],
        [b"subject", b"to", b"subject", b"to"],
    ],
)
def test_select_fields(include):
    assert select_fields(FIELDS, include) == dkim.select_headers(FIELDS, include)


@pytest.mark.parametrize(
    "value",
    [
        b" v=1; a=rsa-sha256; d=x.example;\r\n b=AbC+/d\r\n EfG==",
        b" a=1; b=abc\r\n def ; c=2",
        b" b=",
        b" b=\r\n",
        b" b= \r\n",
        b" b=ab  \r\n",
        b"; b = a b c;",
        b" bh=x; b=y\n",
        b" z=foo b=bar; b=1",
        b" b=ab\r\n\r\n",
        b"\tb=\tQUJD\r\n\tREVG;",
    ],
)
def test_empty_b_value(value):
    assert empty_b_value(value) == dkim.RE_BTAG.sub(b"\\1", value)


def test_empty_b_value_on_damaged_signatures():
    rng = random.Random(5)
    value = dict(dkim.rfc822_parse(signed_block())[0])[b"DKIM-Signature"]
    for _ in range(2000):
        mangled = damaged(value, rng)
        assert empty_b_value(mangled) == dkim.RE_BTAG.sub(b"\\1", mangled), mangled


@pytest.mark.parametrize(
    "name, value",
    [
        (b"Subject", b" hello   world \r\n"),
        (b"Subject", b"\thello\r\n\t world\r\n"),
        (b"Subject ", b"  \r\n"),
        (b"X", b""),
        (b"To", b" a,\r\n   b ,\r\n\tc\r\n"),
        (b"X", b" \xc3\xa4 8-bit\xa0nbsp\r\n"),
        (b"DKIM-Signature", b" v=1; b=\r\n"),
    ],
)
def test_relaxed_field(name, value):
    assert relaxed_field(name, value) == Relaxed.canonicalize_headers([(name, value)])[0]


@pytest.mark.parametrize("value", [b" bare\rcr\r\n", b" vertical\x0btab\r\n", b" form\x0cfeed"])
def test_relaxed_field_leaves_odd_whitespace_to_dkimpy(value):
    assert relaxed_field(b"X", value) is None


def test_relaxed_field_on_damaged_fields():
    rng = random.Random(6)
    fields = dkim.rfc822_parse(signed_block())[0]
    for _ in range(2000):
        name, value = rng.choice(fields)
        mangled = damaged(value, rng)
        ours = relaxed_field(name, mangled)
        if ours is not None:
            assert ours == Relaxed.canonicalize_headers([(name, mangled)])[0], mangled


def test_relaxed_field_leaves_a_line_break_before_a_word_to_dkimpy():
    assert relaxed_field(b"X", b" a\r\nb\r\n") is None


@pytest.mark.parametrize(
    "value", [b"", b"a\r\nb", b"a\nb", b"a\r\r\nb", b"a\rb", b"\r\n\n\r", b" x\r\n y\r\n"]
)
def test_unfold(value):
    assert unfold(value) == re.sub(b"\r?\n", b"", value)
