"""The pure DKIM decision (chatmaild.filtermail.dkimcheck) and its SMTP verdicts (policy).

Messages are signed here with dkimpy and fresh RSA 2048 or Ed25519 keys, relaxed/simple like
OpenDKIM; keys come from a dict of looked-up TXT records, as the fetcher would hand them over.
RFC 8463's own example checks Ed25519 (and RSA) against the RFC authors' signatures.
"""

import base64
import hashlib
import random
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim_samples import (
    RFC8463_KEYS,
    RFC8463_MESSAGE,
    SELECTOR,
    damaged,
    ed25519_key,
    rsa_key,
    sign,
)
from filtermail_samples import armor, encrypt, encrypted_mail, plain_mail

from chatmaild.filtermail.dkimcheck import (
    EXEMPT,
    FAIL,
    MAX_FIELDS,
    MAX_REASON,
    MAX_TRIED,
    PASS,
    TEMPORARY,
    DkimResult,
    KeyFound,
    KeyMissing,
    KeyTemporary,
    parse_key,
    screen,
    select_key_record,
    summarize,
    verify,
)
from chatmaild.filtermail.policy import DKIM_LOG_SENDER, Envelope, check_dkim

DOMAIN = "sender.example"
FROM = f"alice@{DOMAIN}"
NAME = f"{SELECTOR}._domainkey.{DOMAIN}"


def published(*pairs):
    """{key name: KeyFound} for (domain, key[, selector]) pairs."""
    keys = {}
    for pair in pairs:
        domain, key = pair[:2]
        selector = pair[2] if len(pair) > 2 else SELECTOR
        keys[f"{selector}._domainkey.{domain}"] = key.found()
    return keys


def decide(message: bytes, keys: dict) -> DkimResult:
    screening = screen(message)
    # the caller fetches exactly the key names screening asks for
    fetched = {
        name: keys.get(name, KeyMissing(f"no such name {name}")) for name in screening.key_names
    }
    return verify(message, screening, fetched)


def message(sender=FROM, **extra) -> bytes:
    return plain_mail(sender=sender, to="bob@chat.example", body=b"hello\nworld\n", **extra)


KEY = rsa_key("a")
OTHER_KEY = rsa_key("b")
ED_KEY = ed25519_key("a")
OTHER_ED_KEY = ed25519_key("b")


def test_valid_aligned_signature_passes():
    result = decide(sign(message(), DOMAIN, KEY), published((DOMAIN, KEY)))
    assert result == DkimResult(PASS, f"d={DOMAIN} s={SELECTOR}")


def test_signed_encrypted_mail_passes():
    mail = encrypted_mail(armor(encrypt(("x25519",), 2000)), sender=FROM, to="bob@chat.example")
    assert decide(sign(mail, DOMAIN, KEY), published((DOMAIN, KEY))).outcome == PASS


def test_unsigned_fails_without_any_key_lookup():
    screening = screen(message())
    assert screening.key_names == ()
    assert screening.result == DkimResult(FAIL, "no signature")


@pytest.mark.parametrize(
    "from_domain, signing_domain",
    [
        ("Sender.Example", "sender.example"),
        ("sender.example", "SENDER.example"),
        ("sender.example.", "sender.example"),
    ],
)
def test_alignment_is_case_insensitive(from_domain, signing_domain):
    signed = sign(message(sender=f"alice@{from_domain}"), signing_domain, KEY)
    assert decide(signed, published((DOMAIN, KEY))).outcome == PASS


def test_other_signing_domain_fails_without_lookup():
    signed = sign(message(), "other.example", KEY)
    screening = screen(signed)
    assert screening.key_names == ()
    result = decide(signed, published(("other.example", KEY), (DOMAIN, KEY)))
    assert result == DkimResult(FAIL, f"d=other.example does not match From domain {DOMAIN}")


def test_parent_domain_signature_does_not_align():
    """Strict alignment: From a.b.example is not covered by d=b.example (nor the reverse)."""
    sub = message(sender="alice@a.b.example")
    result = decide(sign(sub, "b.example", KEY), published(("b.example", KEY)))
    assert result.outcome == FAIL
    assert "d=b.example does not match From domain a.b.example" in result.reason
    parent = message(sender="alice@b.example")
    result = decide(sign(parent, "a.b.example", KEY), published(("a.b.example", KEY)))
    assert result.outcome == FAIL


def test_body_changed_after_signing_fails():
    signed = sign(message(), DOMAIN, KEY).replace(b"world", b"w0rld")
    result = decide(signed, published((DOMAIN, KEY)))
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: body hash mismatch")


def test_appended_body_line_fails():
    signed = sign(message(), DOMAIN, KEY) + b"P.S. added later\r\n"
    assert decide(signed, published((DOMAIN, KEY))).reason.endswith("body hash mismatch")


@pytest.mark.parametrize(
    "old, new",
    [
        (b"Subject: [...]", b"Subject: [..!]"),
        (b"From: Alice <alice@", b"From: Mallory <alice@"),
        (b"To: <bob@chat.example>", b"To: <eve@chat.example>"),
    ],
)
def test_signed_header_changed_fails(old, new):
    signed = sign(message(), DOMAIN, KEY)
    assert old in signed
    result = decide(signed.replace(old, new), published((DOMAIN, KEY)))
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: signature did not verify")


def test_added_second_from_header_fails():
    signed = sign(message(), DOMAIN, KEY)
    tampered = signed.replace(b"\r\n\r\n", b"\r\nFrom: eve@sender.example\r\n\r\n", 1)
    assert decide(tampered, published((DOMAIN, KEY))) == DkimResult(FAIL, "several From headers")


def test_relaxed_header_canonicalization_tolerates_refolding():
    signed = sign(message(), DOMAIN, KEY)
    refolded = signed.replace(b"Subject: [...]", b"Subject:   [...]  ")
    assert decide(refolded, published((DOMAIN, KEY))).outcome == PASS


def test_revoked_key_fails():
    revoked = {NAME: KeyFound((b"v=DKIM1; k=rsa; p=",))}
    result = decide(sign(message(), DOMAIN, KEY), revoked)
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: key revoked (empty p=)")


def test_signed_with_unpublished_key_fails():
    result = decide(sign(message(), DOMAIN, OTHER_KEY), published((DOMAIN, KEY)))
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: signature did not verify")


def test_missing_key_fails():
    result = decide(sign(message(), DOMAIN, KEY), {})
    assert result == DkimResult(FAIL, f"{NAME}: no such name {NAME}")


def test_dns_error_is_temporary():
    keys = {NAME: KeyTemporary(f"DNS timeout for {NAME}")}
    result = decide(sign(message(), DOMAIN, KEY), keys)
    assert result == DkimResult(TEMPORARY, f"DNS timeout for {NAME}")


IP_LITERAL_CASES = [
    # (From domain, XFORWARD ADDR as Postfix sends it, outcome, reason)
    ("[192.0.2.1]", "192.0.2.1", EXEMPT, "IP literal [192.0.2.1] is the client address"),
    (
        "[IPv6:2001:db8::1]",
        "IPv6:2001:db8::1",
        EXEMPT,
        "IP literal [IPv6:2001:db8::1] is the client address",
    ),
    (
        "[ipv6:2001:DB8:0::1]",
        "IPV6:2001:db8::0:1",
        EXEMPT,
        "IP literal [ipv6:2001:DB8:0::1] is the client address",
    ),
    ("[2001:db8::1]", "IPv6:2001:db8::1", EXEMPT, "IP literal [2001:db8::1] is the client address"),
    (
        "[IPv6:::ffff:192.0.2.1]",
        "192.0.2.1",
        EXEMPT,
        "IP literal [IPv6:::ffff:192.0.2.1] is the client address",
    ),
    (
        "[192.0.2.1]",
        "IPv6:::ffff:192.0.2.1",
        EXEMPT,
        "IP literal [192.0.2.1] is the client address",
    ),
    ("[10.9.9.9]", "192.0.2.1", FAIL, "IP literal [10.9.9.9] is not the client address 192.0.2.1"),
    (
        "[IPv6:2001:db8::2]",
        "IPv6:2001:db8::1",
        FAIL,
        "IP literal [IPv6:2001:db8::2] is not the client address 2001:db8::1",
    ),
    (
        "[IPv6:2001:db8::1]",
        "192.0.2.1",
        FAIL,
        "IP literal [IPv6:2001:db8::1] is not the client address 192.0.2.1",
    ),
    ("[192.0.2.1]", None, FAIL, "IP literal [192.0.2.1] and no client address (XFORWARD ADDR)"),
    (
        "[IPv6:2001:db8::1]",
        None,
        FAIL,
        "IP literal [IPv6:2001:db8::1] and no client address (XFORWARD ADDR)",
    ),
    (
        "[192.0.2.1]",
        "client.example",
        FAIL,
        "IP literal [192.0.2.1]: client address client.example is no IP",
    ),
    (
        "[192.0.2.1]",
        "IPv6:192.0.2.1",
        FAIL,
        "IP literal [192.0.2.1]: client address IPv6:192.0.2.1 is no IP",
    ),
    (
        "[IPv6:192.0.2.1]",
        "192.0.2.1",
        FAIL,
        "From domain [IPv6:192.0.2.1] is not an IP address literal",
    ),
    (
        "[192.000.002.001]",
        "192.0.2.1",
        FAIL,
        "From domain [192.000.002.001] is not an IP address literal",
    ),
    (
        "[mail.example]",
        "192.0.2.1",
        FAIL,
        "From domain [mail.example] is not an IP address literal",
    ),
]


@pytest.mark.parametrize("literal, client_addr, outcome, reason", IP_LITERAL_CASES)
def test_ip_literal_sender_is_exempt_only_from_its_own_address(
    literal, client_addr, outcome, reason
):
    screening = screen(message(sender=f"alice@{literal}"), client_addr)
    assert screening.key_names == ()  # decided without DNS either way
    assert screening.result == DkimResult(outcome, reason)


def test_ip_literal_never_exempts_signatures_of_a_domain():
    """A DNS-name From ignores the client address: its own key decides."""
    signed = sign(message(), DOMAIN, KEY)
    assert screen(signed, "192.0.2.1").key_names == (NAME,)


def test_multiple_signatures_one_good_aligned_passes():
    base = message()
    other = sign(base, "other.example", OTHER_KEY)  # not aligned
    bad = sign(other, DOMAIN, OTHER_KEY, "old")  # aligned, key not the published one
    good = sign(bad, DOMAIN, KEY)  # aligned and good, outermost
    keys = published(("other.example", OTHER_KEY), (DOMAIN, KEY, "old"), (DOMAIN, KEY))
    assert decide(good, keys) == DkimResult(PASS, f"d={DOMAIN} s={SELECTOR}")
    # the good one first, then a bad aligned one added later: still a pass
    later = sign(sign(base, DOMAIN, KEY), DOMAIN, OTHER_KEY, "old")
    assert decide(later, keys).outcome == PASS


def test_multiple_signatures_all_bad_lists_every_reason():
    signed = sign(sign(message(), "other.example", KEY), DOMAIN, OTHER_KEY)
    result = decide(signed, published((DOMAIN, KEY)))
    assert result.outcome == FAIL
    assert f"d={DOMAIN} s={SELECTOR}: signature did not verify" in result.reason
    assert f"d=other.example does not match From domain {DOMAIN}" in result.reason


def test_temporary_lookup_does_not_hide_a_pass_and_beats_a_failure():
    signed = sign(sign(message(), DOMAIN, KEY), DOMAIN, KEY, "second")
    second = f"second._domainkey.{DOMAIN}"
    keys = {NAME: KEY.found(), second: KeyTemporary(f"DNS timeout for {second}")}
    assert decide(signed, keys).outcome == PASS
    keys = {NAME: OTHER_KEY.found(), second: KeyTemporary(f"DNS timeout for {second}")}
    assert decide(signed, keys) == DkimResult(TEMPORARY, f"DNS timeout for {second}")


def test_rsa_sha1_is_not_accepted():
    signed = sign(message(), DOMAIN, KEY, algorithm=b"rsa-sha1")
    result = decide(signed, published((DOMAIN, KEY)))
    assert result == DkimResult(FAIL, "signature 0: algorithm rsa-sha1 not accepted")


def test_partial_body_signature_is_not_accepted():
    signed = sign(message(), DOMAIN, KEY, length=True)
    result = decide(signed, published((DOMAIN, KEY)))
    assert result == DkimResult(FAIL, "signature 0: l= (partial body) not accepted")


def test_malformed_signature_field_fails():
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example\r\n" + message()
    result = decide(signed, published((DOMAIN, KEY)))
    assert result.outcome == FAIL
    assert result.reason.startswith("signature 0: missing")


@pytest.mark.parametrize(
    "headers, reason",
    [
        (b"To: bob@chat.example\r\n", "no From header"),
        (b"From: a@x.example, b@x.example\r\n", "no single address in the From header"),
    ],
)
def test_from_problems_fail(headers, reason):
    assert screen(headers + b"\r\nbody\r\n").result == DkimResult(FAIL, reason)


@pytest.mark.parametrize(
    "records, chosen",
    [
        ((b"v=DKIM1; p=A",), b"v=DKIM1; p=A"),
        ((b"p=A",), b"p=A"),
        ((b"google-site-verification=x", b"v=DKIM1; p=A"), b"v=DKIM1; p=A"),
        ((b"v=DKIM1; p=A", b"v=DKIM1; p=B"), None),
        ((b"p=A", b"p=B"), None),
    ],
)
def test_select_key_record(records, chosen):
    assert select_key_record(records) == chosen


def test_key_record_with_several_strings_and_spaces():
    """A 2048-bit key record is longer than one TXT string; resolvers hand over the parts,
    the fetcher joins them; whitespace inside p= (as some zone files write it) is fine."""
    record = KEY.record()
    spaced = record[:60] + " " + record[60:200] + "\t" + record[200:]
    keys = {NAME: KeyFound((spaced.encode(),))}
    assert decide(sign(message(), DOMAIN, KEY), keys).outcome == PASS


# -- SMTP verdicts and log lines -----------------------------------------------------------------

ENV = Envelope(mail_from="alice@sender.example", rcpt_tos=["bob@chat.example"])
LINE = "Incoming: Filtering encrypted mail."


@pytest.mark.parametrize(
    "result, code, text, line",
    [
        (DkimResult(PASS, "d=x s=y"), None, None, LINE),
        (
            DkimResult(EXEMPT, "IP literal [192.0.2.1] is the client address"),
            None,
            None,
            f"{LINE} DKIM exempt: IP literal [192.0.2.1] is the client address",
        ),
        (
            DkimResult(FAIL, "IP literal [10.9.9.9] is not the client address 192.0.2.1"),
            550,
            "5.7.1 No valid DKIM signature found",
            f"{LINE} DKIM failed for mail from <alice@sender.example>: "
            "IP literal [10.9.9.9] is not the client address 192.0.2.1",
        ),
        (
            DkimResult(FAIL, "no signature"),
            550,
            "5.7.1 No valid DKIM signature found",
            f"{LINE} DKIM failed for mail from <alice@sender.example>: no signature",
        ),
        (
            DkimResult(TEMPORARY, "DNS timeout for s._domainkey.d"),
            451,
            "4.7.1 Cannot verify the DKIM signature now, try again later"
            " (DNS timeout for s._domainkey.d)",
            f"{LINE} DKIM temporary failure for mail from <alice@sender.example>: "
            "DNS timeout for s._domainkey.d",
        ),
    ],
)
def test_check_dkim_verdicts(result, code, text, line):
    verdict, logged = check_dkim(result, ENV, LINE)
    got = (verdict.code, verdict.text) if verdict is not None else (None, None)
    assert got == (code, text)
    assert logged == line
    assert "\n" not in logged


def test_check_dkim_reply_stays_one_printable_line():
    reason = "DNS failure\r\nfor x" + "y" * 600
    verdict, line = check_dkim(DkimResult(TEMPORARY, reason), ENV, LINE)
    assert verdict.text.isprintable() and len(verdict.text) < 400
    assert line.isprintable()


def test_check_dkim_line_after_an_accepting_policy_line():
    policy_line = "Incoming: Filtering unencrypted mail. Accepted: no recipient enforces encryption"
    _, line = check_dkim(DkimResult(FAIL, "no signature"), ENV, policy_line)
    assert line == f"{policy_line}. DKIM failed for mail from <alice@sender.example>: no signature"
    assert check_dkim(DkimResult(PASS, "d=x s=y"), ENV, policy_line) == (None, policy_line)


# -- agreement with dkimpy's own verifier ------------------------------------------------------


def in_body(mail: bytes, change) -> bytes:
    head, sep, body = mail.partition(b"\r\n\r\n")
    return head + sep + change(body)


def two_to_fields(mail: bytes) -> bytes:
    return mail.replace(b"To: <bob@chat.example>\r\n", b"To: <a@x.test>\r\nTo: <b@x.test>\r\n")


BASES = {
    "plain": lambda: message(),
    "encrypted": lambda: encrypted_mail(armor(encrypt(("x25519",), 800)), sender=FROM),
    "two To fields": lambda: two_to_fields(message()),
    "empty body": lambda: message().split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    "trailing blank lines": lambda: message() + b"\r\n\r\n",
    "folded subject": lambda: message(Subject="a long\r\n\tfolded subject"),
}
TAMPERINGS = {
    "none": lambda m: m,
    "subject spaces": lambda m: m.replace(b"Subject:", b"Subject:  ", 1),
    "subject case": lambda m: m.replace(b"Subject:", b"SUBJECT:", 1),
    "trailing spaces in body": lambda m: in_body(m, lambda b: b.replace(b"\r\n", b" \r\n")),
    "spaces doubled in body": lambda m: in_body(m, lambda b: b.replace(b" ", b"  ")),
    "blank lines appended": lambda m: m + b"\r\n\r\n\r\n",
    "text appended": lambda m: m + b"more\r\n",
    "To swapped": lambda m: m.replace(b"<a@x.test>", b"<c@x.test>"),
    "field added on top": lambda m: b"X-Spam: no\r\n" + m,
    "From added": lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: eve@sender.example\r\n\r\n", 1),
    "LF line ends": lambda m: m.replace(b"\r\n", b"\n"),
}


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", [b"relaxed/simple", b"simple/simple", b"relaxed/relaxed"])
@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_agrees_with_dkimpy(kind, canon, base, tampering):
    """Our verification (dkimpy's canonicalization, OpenSSL's RSA and Ed25519) says pass
    exactly when dkimpy's complete verifier (Ed25519 by PyNaCl) does, whatever was changed
    after signing."""
    key = KEY if kind == "rsa" else ED_KEY
    header_c, body_c = canon.split(b"/")
    original = BASES[base]()
    signature = dkim.sign(
        original,
        SELECTOR.encode(),
        DOMAIN.encode(),
        key.private_pem,
        canonicalize=(header_c, body_c),
        signature_algorithm=key.algorithm,
    )
    mail = TAMPERINGS[tampering](signature + original)
    record = key.record().encode()
    try:
        theirs = dkim.DKIM(mail).verify(dnsfunc=lambda name, timeout=5: record)
    except dkim.DKIMException:  # e.g. "body hash mismatch" is raised, not returned
        theirs = False
    ours = decide(mail, published((DOMAIN, key)))
    assert (ours.outcome == PASS) == bool(theirs), ours


# -- key records ---------------------------------------------------------------------------------


def small_key_record(bits: int) -> bytes:
    """A PKCS#1 RSA public key record of `bits` (any odd modulus will do for parsing)."""
    modulus = (1 << (bits - 1)) | 0xF1
    der = (
        rsa.RSAPublicNumbers(65537, modulus)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    )
    return b"v=DKIM1; p=" + base64.b64encode(der)


P = KEY.record().split("p=", 1)[1].encode()


@pytest.mark.parametrize(
    "record, reason",
    [
        (b"v=DKIM1; k=rsa; p=", "key revoked (empty p=)"),
        (b"v=DKIM1; k=rsa", "key record without p="),
        (b"v=DKIM2; p=" + P, "key record v= is not DKIM1"),
        (b"v=DKIM1; k=dsa; p=" + P, "key type k=dsa not supported"),
        (b"v=DKIM1; k=ed25519; p=" + P, "key p= is not 32 bytes of an Ed25519 key"),
        (b"v=DKIM1; h=sha1; p=" + P, "key record does not allow sha256 (h=)"),
        (b"v=DKIM1; s=tlsrpt; p=" + P, "key record is not for email (s=)"),
        (b"v=DKIM1; p=not!base64", "key p= is not base64"),
        (b"v=DKIM1; p=" + base64.b64encode(b"junk"), "key p= is not an RSA public key"),
        (b"v=DKIM1; p", "malformed key record"),
    ],
)
def test_unusable_key_records(record, reason):
    assert parse_key(record) == reason
    result = decide(sign(message(), DOMAIN, KEY), {NAME: KeyFound((record,))})
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: {reason}")


@pytest.mark.parametrize(
    "record",
    [
        KEY.record().encode(),
        b"p=" + P,  # v= and k= are optional
        b"v=DKIM1; k=rsa; h=sha1:sha256; s=email:tlsrpt; t=y; p=" + P,
    ],
)
def test_usable_key_records(record):
    assert not isinstance(parse_key(record), str)
    assert decide(sign(message(), DOMAIN, KEY), {NAME: KeyFound((record,))}).outcome == PASS


def test_key_below_1024_bits_is_refused():
    assert parse_key(small_key_record(512)) == "key too small (512 bits)"


def test_pkcs1_key_record_is_accepted():
    record = small_key_record(1024)
    assert parse_key(record).key_size == 1024


def test_from_must_be_signed():
    # dkimpy refuses to sign without From: take From out of a signature's h= list
    signed = sign(message(), DOMAIN, KEY)
    signed, found = re.subn(rb"from\s*:\s*", b"", signed)  # lower case: only in h=
    assert found == 2
    assert screen(signed).result == DkimResult(FAIL, "signature 0: From is not signed")


def test_identity_equal_to_domain_is_refused_not_raised():
    """dkimpy's field check raises IndexError for i= equal to d= (no @)."""
    signed = sign(message(), DOMAIN, KEY).replace(b"i=@sender.example", b"i=sender.example", 1)
    assert screen(signed).result == DkimResult(FAIL, "signature 0: malformed tag value")


def test_mangled_messages_never_raise():
    """Random damage to a signed message: always a verdict, never an exception (which the
    server would turn into a 451, and the sender would retry for days)."""
    rng = random.Random(12)
    base = sign(message(), DOMAIN, KEY)
    keys = published((DOMAIN, KEY))
    outcomes = {decide(damaged(base, rng), keys).outcome for _ in range(1500)}
    assert outcomes == {PASS, FAIL}  # damage outside what is signed still passes


def test_internationalized_from_domain_aligns_with_its_a_label():
    mail = message(sender="alice@bücher.example")
    assert "bücher".encode() in mail
    signed = sign(mail, "xn--bcher-kva.example", KEY)
    assert decide(signed, published(("xn--bcher-kva.example", KEY))).outcome == PASS


# -- ed25519-sha256 (RFC 8463) -------------------------------------------------------------------


def rfc8463_keys(*selectors) -> dict:
    """The example's published records, only those of `selectors` (the rest: no such name)."""
    return {
        name: KeyFound((record,))
        for name, record in RFC8463_KEYS.items()
        if name.split(".")[0] in selectors
    }


def test_rfc8463_example_verifies_with_its_ed25519_key_alone():
    """RFC 8463 A.3, signed by the RFC's authors: the Ed25519 signature (tried first, it is
    on top) passes with only the Ed25519 key published, the RSA one with only the RSA key."""
    assert decide(RFC8463_MESSAGE, rfc8463_keys("brisbane")) == DkimResult(
        PASS, "d=football.example.com s=brisbane"
    )
    assert decide(RFC8463_MESSAGE, rfc8463_keys("test")) == DkimResult(
        PASS, "d=football.example.com s=test"
    )


def test_rfc8463_example_changed_fails():
    tampered = RFC8463_MESSAGE.replace(b"Is dinner ready?", b"Is dinner ready!")
    result = decide(tampered, rfc8463_keys("brisbane", "test"))
    assert result.outcome == FAIL
    assert "s=brisbane: signature did not verify" in result.reason
    assert "s=test: signature did not verify" in result.reason


def test_ed25519_only_mail_passes_with_its_published_key():
    signed = sign(message(), DOMAIN, ED_KEY)
    assert b"a=ed25519-sha256" in signed
    assert decide(signed, published((DOMAIN, ED_KEY))) == DkimResult(
        PASS, f"d={DOMAIN} s={SELECTOR}"
    )


def test_ed25519_signature_with_another_ed25519_key_published_fails():
    signed = sign(message(), DOMAIN, OTHER_ED_KEY)
    result = decide(signed, published((DOMAIN, ED_KEY)))
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: signature did not verify")


@pytest.mark.parametrize(
    "signing, published_key, reason",
    [
        (ED_KEY, KEY, "key type rsa does not fit a=ed25519-sha256"),
        (KEY, ED_KEY, "key type ed25519 does not fit a=rsa-sha256"),
    ],
)
def test_key_type_must_fit_the_algorithm(signing, published_key, reason):
    result = decide(sign(message(), DOMAIN, signing), published((DOMAIN, published_key)))
    assert result == DkimResult(FAIL, f"d={DOMAIN} s={SELECTOR}: {reason}")


def test_ed25519_key_record_holds_the_raw_key_not_a_spki():
    """RFC 8463 4.2: p= is the 32 bytes of the key; the SubjectPublicKeyInfo wrapping (44
    bytes, as `openssl pkey -pubout` writes it) is refused."""
    spki = serialization.load_der_public_key(
        bytes.fromhex("302a300506032b6570032100") + ED_KEY.public_der
    ).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(spki)
    assert parse_key(record) == "key p= is not 32 bytes of an Ed25519 key"
    assert not isinstance(parse_key(ED_KEY.record().encode()), str)


def test_ed25519_signature_of_the_wrong_length_is_set_aside_without_a_key():
    signed = sign(message(), DOMAIN, ED_KEY)
    head, sep, rest = signed.partition(b" b=")
    value_end = rest.index(b"\r\nFrom:")
    short = head + sep + b"AAAA" + rest[value_end:]
    screening = screen(short)
    assert screening.key_names == ()
    assert screening.result == DkimResult(FAIL, "signature 0: an Ed25519 signature is 64 bytes")


def test_rsa_and_ed25519_signatures_on_one_message():
    """A sender signing with both (RFC 8463 6): either key alone is enough."""
    both = sign(sign(message(), DOMAIN, KEY, "rsa"), DOMAIN, ED_KEY, "ed")
    assert decide(both, published((DOMAIN, ED_KEY, "ed"))).reason == f"d={DOMAIN} s=ed"
    assert decide(both, published((DOMAIN, KEY, "rsa"))).reason == f"d={DOMAIN} s=rsa"


# -- bounded work per message (RFC 6376 6.1) -----------------------------------------------------


def many_signatures(count: int, base: bytes | None = None, key=OTHER_KEY) -> bytes:
    """`count` aligned signatures with a right body hash, selectors s0.. (s0 on top)."""
    mail = base if base is not None else message()
    for i in reversed(range(count)):
        mail = sign(mail, DOMAIN, key, f"s{i}")
    return mail


def test_at_most_max_tried_keys_are_fetched_for_many_aligned_signatures():
    mail = many_signatures(50)
    screening = screen(mail)
    assert screening.key_names == tuple(f"s{i}._domainkey.{DOMAIN}" for i in range(MAX_TRIED))
    result = decide(mail, published((DOMAIN, KEY, "s49")))  # the good key of a later one
    assert result.outcome == FAIL
    assert len(result.reason) <= MAX_REASON
    assert result.reason.startswith(
        f"50 signatures, only the first {MAX_FIELDS} looked at; "
        f"only the first {MAX_TRIED} usable signatures tried; s0._domainkey.{DOMAIN}: "
    )
    assert result.reason.endswith(" more")


def test_signatures_past_the_cap_are_named_in_the_reason():
    mail = many_signatures(MAX_TRIED + 1)
    result = decide(mail, {})
    assert result.outcome == FAIL
    assert len(result.reason) <= MAX_REASON
    assert result.reason.startswith(
        f"only the first {MAX_TRIED} usable signatures tried; s0._domainkey.{DOMAIN}: no such"
    )


def test_a_good_signature_among_the_first_tried_passes():
    mail = sign(many_signatures(MAX_TRIED - 1), DOMAIN, KEY)  # the good one on top
    assert decide(mail, published((DOMAIN, KEY))).outcome == PASS
    mail = many_signatures(MAX_TRIED - 1, sign(message(), DOMAIN, KEY))  # the good one last
    assert decide(mail, published((DOMAIN, KEY))).outcome == PASS


def test_body_hash_is_checked_before_any_key_is_fetched():
    """Signatures whose body hash does not match the body cost no DNS query."""
    mail = many_signatures(3) + b"appended\r\n"
    screening = screen(mail)
    assert screening.key_names == ()
    assert screening.result.outcome == FAIL
    assert screening.result.reason == "; ".join(
        f"d={DOMAIN} s=s{i}: body hash mismatch" for i in range(3)
    )


def fake_signatures(count: int, bh: bytes) -> bytes:
    """`count` aligned DKIM-Signature fields with garbage b= (what an attacker adds)."""
    fields = [
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d="
        + DOMAIN.encode()
        + b"; s=x"
        + str(i).encode()
        + b"; h=from:to; bh="
        + bh
        + b"; b="
        + b"A" * 344
        + b"\r\n"
        for i in range(count)
    ]
    return b"".join(fields)


def test_two_thousand_garbage_signatures_cost_bounded_work_and_a_short_reason():
    """The issue's attack: a 2,000-signature message. Only the first MAX_FIELDS fields are
    looked at, at most MAX_TRIED keys asked for, the reason stays short."""
    base = message()
    body = base.partition(b"\r\n\r\n")[2]
    bh = base64.b64encode(hashlib.sha256(body).digest())  # simple body: the body itself
    mail = fake_signatures(2000, bh) + base
    assert len(mail) > 200_000
    screening = screen(mail)
    assert len(screening.key_names) == MAX_TRIED
    result = verify(mail, screening, {n: KeyMissing("no such name") for n in screening.key_names})
    assert result.outcome == FAIL
    assert len(result.reason) <= MAX_REASON
    assert result.reason.startswith(f"2000 signatures, only the first {MAX_FIELDS} looked at")
    wrong_bh = fake_signatures(2000, base64.b64encode(b"x" * 32)) + base
    screening = screen(wrong_bh)
    assert screening.key_names == ()
    assert len(screening.result.reason) <= MAX_REASON


@pytest.mark.parametrize(
    "reasons, limit, text",
    [
        ([], 50, ""),
        (["a", "b"], 50, "a; b"),
        (["a" * 10, "b" * 10, "c" * 10], 30, "aaaaaaaaaa; bbbbbbbbbb; 1 more"),
        (["a" * 10, "b" * 10, "c" * 10], 29, "aaaaaaaaaa; 2 more"),
        (["a" * 10, "b" * 10, "c" * 5], 30, "aaaaaaaaaa; bbbbbbbbbb; ccccc"),
        (["a" * 40, "b"], 30, "a" * 19 + "...; 1 more"),
        (["a" * 40], 30, "a" * 27 + "..."),
    ],
)
def test_summarize(reasons, limit, text):
    assert summarize(reasons, limit) == text
    assert len(summarize(reasons, limit)) <= limit


def test_check_dkim_line_stays_short_for_long_senders_and_reasons():
    env = Envelope(mail_from="a" * 900 + "@sender.example", rcpt_tos=["bob@chat.example"])
    verdict, line = check_dkim(DkimResult(FAIL, "x" * 5000), env, LINE)
    assert verdict.code == 550
    assert len(line) <= len(LINE) + DKIM_LOG_SENDER + MAX_REASON + 40
