"""is_encrypted (SPEC 4.2), is_securejoin (4.5), Autocrypt Setup Message, mailer-daemon reports."""

import pytest
from filtermail_samples import (
    BOUNDARY,
    ENCRYPTED_CT,
    PASSWORD,
    RECIPIENT,
    SENDER,
    armor,
    crlf,
    encrypt,
    encrypted_mail,
    mail,
    mime_part,
    multipart,
    reframe_seipd_partial,
    securejoin_mail,
    top_headers,
)
from pgpy import PGPMessage

from chatmaild.filtermail.checks import (
    is_autocrypt_setup_message,
    is_encrypted,
    is_mailer_daemon_report,
    is_securejoin,
)

# name -> binary OpenPGP message (real, from PGPy)
PAYLOADS = {
    "rsa": lambda: encrypt(("rsa",), 200),
    "p256": lambda: encrypt(("p256",), 200),
    "x25519": lambda: encrypt(("x25519",), 200),
    "several-pkesk": lambda: encrypt(("rsa", "p256", "x25519"), 4000),
    "skesk": lambda: encrypt((), 200, PASSWORD),
    "partial-lengths": lambda: reframe_seipd_partial(encrypt(("x25519",), 50_000), 10),
    "multi-megabyte": lambda: encrypt(("x25519", "rsa"), 2_500_000),
}


@pytest.fixture(scope="session", params=sorted(PAYLOADS))
def payload_binary(request):
    return PAYLOADS[request.param]()


@pytest.mark.parametrize("cte", ["7bit", "base64", "quoted-printable", None])
@pytest.mark.parametrize("line_ends", ["crlf", "lf"])
def test_rfc3156_mail_is_encrypted(payload_binary, cte, line_ends):
    message = encrypted_mail(armor(payload_binary), cte=cte, line_ends=line_ends)
    assert is_encrypted(message, allow_armor_header=False)
    assert is_encrypted(message, allow_armor_header=True)


def test_pgpy_armor_in_mail_is_encrypted(payload_binary):
    armored = str(PGPMessage.from_blob(payload_binary)).encode()
    assert is_encrypted(encrypted_mail(armored), allow_armor_header=False)


SMALL = encrypt(("x25519",), 200)
ARMORED = armor(SMALL)
OUTER = top_headers(content_type=ENCRYPTED_CT)
CONTROL = mime_part("application/pgp-encrypted", b"Version: 1\n")
PAYLOAD = mime_part("application/octet-stream", ARMORED)


def _mail(parts, content_type=ENCRYPTED_CT, **kw):
    return mail(top_headers(content_type=content_type), multipart(parts, **kw))


ACCEPTED = {
    "uppercase-types": _mail(
        [
            mime_part("Application/PGP-Encrypted", b"Version: 1\n"),
            mime_part("APPLICATION/OCTET-STREAM", ARMORED),
        ],
        content_type=f"Multipart/Encrypted; boundary={BOUNDARY}",
    ),
    "unquoted-boundary": _mail(
        [CONTROL, PAYLOAD], content_type=f"multipart/encrypted; boundary={BOUNDARY}"
    ),
    "boundary-not-first-param": _mail(
        [CONTROL, PAYLOAD],
        content_type=(
            f'multipart/encrypted;\r\n boundary="{BOUNDARY}";\r\n'
            ' protocol="application/pgp-encrypted"'
        ),
    ),
    "preamble-and-epilogue": _mail(
        [CONTROL, PAYLOAD],
        preamble=b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n",
        epilogue=b"epilogue text\n",
    ),
    "version-with-whitespace": _mail(
        [mime_part("application/pgp-encrypted", b"  \r\nVersion: 1  \r\n\r\n"), PAYLOAD]
    ),
    "part-without-cte-header": _mail(
        [mime_part("application/pgp-encrypted", b"Version: 1\n", None), PAYLOAD]
    ),
    "version-armor-header-incoming-only-check": encrypted_mail(
        armor(SMALL, headers=("Version: PGPy",)), cte="7bit"
    ),
    "transport-padding-after-boundary": mail(
        OUTER,
        multipart([CONTROL, PAYLOAD]).replace(
            f"--{BOUNDARY}\n".encode(), f"--{BOUNDARY} \t\n".encode()
        ),
    ),
}


def test_baseline_of_near_misses_is_accepted():
    assert is_encrypted(_mail([CONTROL, PAYLOAD]), allow_armor_header=False)
    assert is_encrypted(crlf(_mail([CONTROL, PAYLOAD])), allow_armor_header=False)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_incoming(name):
    assert is_encrypted(ACCEPTED[name], allow_armor_header=True)
    assert is_encrypted(crlf(ACCEPTED[name]), allow_armor_header=True)


def test_armor_header_refused_outgoing_only():
    message = ACCEPTED["version-armor-header-incoming-only-check"]
    assert not is_encrypted(message, allow_armor_header=False)
    assert is_encrypted(message, allow_armor_header=True)


NESTED = mime_part(
    'multipart/mixed; boundary="inner"',
    multipart([PAYLOAD], boundary="inner"),
)

REFUSED = {
    "multipart-mixed": _mail(
        [CONTROL, PAYLOAD], content_type=f'multipart/mixed; boundary="{BOUNDARY}"'
    ),
    "multipart-signed": _mail(
        [CONTROL, PAYLOAD], content_type=f'multipart/signed; boundary="{BOUNDARY}"'
    ),
    "text-plain-with-armor": mail(top_headers(content_type="text/plain"), ARMORED),
    "no-content-type": mail(top_headers(), multipart([CONTROL, PAYLOAD])),
    "no-boundary-param": _mail([CONTROL, PAYLOAD], content_type="multipart/encrypted"),
    "wrong-boundary-param": _mail(
        [CONTROL, PAYLOAD], content_type='multipart/encrypted; boundary="other"'
    ),
    "unterminated-multipart": _mail([CONTROL, PAYLOAD], close=False),
    "only-control-part": _mail([CONTROL]),
    "only-payload-part": _mail([PAYLOAD]),
    "extra-text-part": _mail([CONTROL, PAYLOAD, mime_part("text/plain", b"hello\n")]),
    "extra-payload-part": _mail([CONTROL, PAYLOAD, PAYLOAD]),
    "swapped-parts": _mail([PAYLOAD, CONTROL]),
    "nested-multipart-payload": _mail([CONTROL, NESTED]),
    "nested-multipart-control": _mail(
        [
            mime_part('multipart/mixed; boundary="inner"', multipart([CONTROL], boundary="inner")),
            PAYLOAD,
        ]
    ),
    "nested-whole-encrypted": _mail(
        [
            mime_part(
                'multipart/encrypted; boundary="inner"',
                multipart([CONTROL, PAYLOAD], boundary="inner"),
            )
        ],
        content_type=f'multipart/mixed; boundary="{BOUNDARY}"',
    ),
    "control-text-plain": _mail([mime_part("text/plain", b"Version: 1\n"), PAYLOAD]),
    "version-2": _mail([mime_part("application/pgp-encrypted", b"Version: 2\n"), PAYLOAD]),
    "version-lowercase": _mail([mime_part("application/pgp-encrypted", b"version: 1\n"), PAYLOAD]),
    "version-empty": _mail([mime_part("application/pgp-encrypted", b"\n"), PAYLOAD]),
    "version-extra-line": _mail(
        [mime_part("application/pgp-encrypted", b"Version: 1\nhello\n"), PAYLOAD]
    ),
    "payload-text-plain": _mail([CONTROL, mime_part("text/plain", ARMORED)]),
    "payload-pgp-keys": _mail([CONTROL, mime_part("application/pgp-keys", ARMORED)]),
    "payload-no-content-type": _mail([CONTROL, b"\n" + ARMORED]),
    "payload-cleartext": _mail([CONTROL, mime_part("application/octet-stream", b"hello\n")]),
    "payload-text-after-end": _mail(
        [CONTROL, mime_part("application/octet-stream", ARMORED + b"PS: hi\n")]
    ),
    "payload-cte-base64-but-raw-armor": _mail(
        [
            CONTROL,
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
            + ARMORED,
        ]
    ),
    "payload-unknown-cte": _mail(
        [
            CONTROL,
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\n"
            + ARMORED,
        ]
    ),
    "payload-signed-not-encrypted": _mail(
        [CONTROL, mime_part("application/octet-stream", armor(b"\xcb\x08b\x00\x00\x00\x00\x00hi"))]
    ),
    "payload-trailing-bytes": _mail(
        [CONTROL, mime_part("application/octet-stream", armor(SMALL + b"\x00"))]
    ),
    "payload-truncated": _mail([CONTROL, mime_part("application/octet-stream", armor(SMALL[:-1]))]),
    "payload-comment-armor-header": _mail(
        [CONTROL, mime_part("application/octet-stream", armor(SMALL, headers=("Comment: x",)))]
    ),
    "headers-only": mail(top_headers(content_type=ENCRYPTED_CT), b""),
    "repeated-top-content-type": mail(
        [*top_headers(content_type=ENCRYPTED_CT).items(), ("Content-Type", "text/plain")],
        multipart([CONTROL, PAYLOAD]),
    ),
    "repeated-part-content-type": _mail(
        [CONTROL, b"Content-Type: application/octet-stream\nContent-Type: text/plain\n\n" + ARMORED]
    ),
    "repeated-part-cte": _mail(
        [
            CONTROL,
            mime_part(
                "application/octet-stream", ARMORED, extra=["Content-Transfer-Encoding: base64"]
            ),
        ]
    ),
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("line_ends", ["crlf", "lf"])
def test_refused(name, line_ends):
    message = REFUSED[name] if line_ends == "lf" else crlf(REFUSED[name])
    assert not is_encrypted(message, allow_armor_header=True)
    assert not is_encrypted(message, allow_armor_header=False)


# --- secure-join (SPEC 4.5) ---

SECUREJOIN_ACCEPTED = {
    "vc-request": securejoin_mail("vc-request"),
    "vg-request": securejoin_mail("vg-request"),
    "body-uppercase-and-spaces": securejoin_mail(body=b"\n  SECURE-JOIN: VC-REQUEST \n\n"),
    "base64-body": securejoin_mail(
        parts=[mime_part("text/plain; charset=utf-8", b"Secure-Join: vg-request\n", "base64")],
        header="vg-request",
    ),
    "part-without-content-type": securejoin_mail(parts=[b"\nSecure-Join: vc-request\n"]),
}

SECUREJOIN_REFUSED = {
    "no-header": securejoin_mail(header=""),
    "header-vc-request-with-auth": securejoin_mail(header="vc-request-with-auth"),
    "header-vc-auth-required": securejoin_mail(header="vc-auth-required"),
    "header-uppercase": securejoin_mail(header="VC-REQUEST"),
    "body-other-step": securejoin_mail(body=b"Secure-Join: vc-request-with-auth\n"),
    "body-extra-text": securejoin_mail(body=b"Secure-Join: vc-request\nhello\n"),
    "body-empty": securejoin_mail(body=b""),
    "two-parts": securejoin_mail(parts=[mime_part("text/plain", b"Secure-Join: vc-request\n")] * 2),
    "html-part": securejoin_mail(parts=[mime_part("text/html", b"Secure-Join: vc-request\n")]),
    "nested-multipart": securejoin_mail(
        parts=[
            mime_part(
                'multipart/mixed; boundary="inner"',
                multipart(
                    [mime_part("text/plain", b"Secure-Join: vc-request\n")], boundary="inner"
                ),
            )
        ]
    ),
    "not-multipart": mail(
        top_headers(content_type="text/plain", Secure_Join="vc-request"),
        b"Secure-Join: vc-request\n",
    ),
    "unterminated": mail(
        top_headers(
            content_type=f'multipart/mixed; boundary="{BOUNDARY}"', Secure_Join="vc-request"
        ),
        multipart([mime_part("text/plain", b"Secure-Join: vc-request\n")], close=False),
    ),
}


@pytest.mark.parametrize("name", sorted(SECUREJOIN_ACCEPTED))
def test_securejoin_accepted(name):
    assert is_securejoin(SECUREJOIN_ACCEPTED[name])
    assert not is_encrypted(SECUREJOIN_ACCEPTED[name], allow_armor_header=True)


@pytest.mark.parametrize("name", sorted(SECUREJOIN_REFUSED))
def test_securejoin_refused(name):
    assert not is_securejoin(SECUREJOIN_REFUSED[name])


# --- Autocrypt Setup Message (SPEC 4.3 step 6) ---


def _setup_message(subject="Autocrypt Setup Message", ct=None):
    headers = top_headers(
        to=SENDER,
        content_type=ct or f'multipart/mixed; boundary="{BOUNDARY}"',
        Autocrypt_Setup_Message="v1",
    )
    headers["Subject"] = subject
    part = mime_part("application/autocrypt-setup", b"-----BEGIN PGP MESSAGE-----\n...\n")
    return mail(headers, multipart([part]))


AUTOCRYPT_CASES = {
    "accepted": (_setup_message(), SENDER, [SENDER], True),
    "accepted-sender-case": (_setup_message(), SENDER, [SENDER.upper()], True),
    "accepted-rfc2047-subject": (
        _setup_message("=?utf-8?q?Autocrypt_Setup_Message?="),
        SENDER,
        [SENDER],
        True,
    ),
    "other-recipient": (_setup_message(), SENDER, [RECIPIENT], False),
    "two-recipients": (_setup_message(), SENDER, [SENDER, RECIPIENT], False),
    "no-recipient": (_setup_message(), SENDER, [], False),
    "other-subject": (_setup_message("Autocrypt Setup Message!"), SENDER, [SENDER], False),
    "lowercase-subject": (_setup_message("autocrypt setup message"), SENDER, [SENDER], False),
    "text-plain": (_setup_message(ct="text/plain"), SENDER, [SENDER], False),
}


@pytest.mark.parametrize("name", sorted(AUTOCRYPT_CASES))
def test_autocrypt_setup_message(name):
    message, sender, rcpts, expected = AUTOCRYPT_CASES[name]
    assert is_autocrypt_setup_message(message, sender, rcpts) is expected


# --- mailer-daemon reports (SPEC 4.4 step 2) ---


def _report(sender="MAILER-DAEMON@other.example", auto="auto-replied", ct=None):
    headers = {
        "From": f"Mail Delivery System <{sender}>" if "<" not in sender else sender,
        "To": RECIPIENT,
        "Subject": "Undelivered Mail Returned to Sender",
        "Content-Type": ct
        or f'multipart/report; report-type=delivery-status;\n boundary="{BOUNDARY}"',
    }
    if auto is not None:
        headers["Auto-Submitted"] = auto
    parts = [
        mime_part("text/plain", b"This is the mail system.\n"),
        mime_part("message/delivery-status", b"Reporting-MTA: dns; other.example\n"),
    ]
    return mail(headers, multipart(parts))


MAILER_DAEMON_CASES = {
    "accepted": (_report(), True),
    "accepted-lowercase": (_report("mailer-daemon@other.example"), True),
    "no-auto-submitted": (_report(auto=None), False),
    "empty-auto-submitted": (_report(auto=""), False),
    "postmaster": (_report("postmaster@other.example"), False),
    "mailer-daemon-in-display-name": (_report('"mailer-daemon@x.org" <evil@other.example>'), False),
    "mailer-daemon-suffix": (_report("not-mailer-daemon@other.example"), False),
    "multipart-mixed": (_report(ct=f'multipart/mixed; boundary="{BOUNDARY}"'), False),
    "text-plain": (_report(ct="text/plain"), False),
}


@pytest.mark.parametrize("name", sorted(MAILER_DAEMON_CASES))
def test_mailer_daemon_report(name):
    message, expected = MAILER_DAEMON_CASES[name]
    assert is_mailer_daemon_report(message) is expected


@pytest.mark.parametrize(
    "name, duplicate",
    [
        ("repeated-top-content-type", b"Content-Type: text/plain\r\n"),
        ("repeated-part-content-type", b"Content-Type: text/plain\r\n"),
        ("repeated-part-cte", b"Content-Transfer-Encoding: base64\r\n"),
    ],
)
def test_only_the_repeated_field_makes_it_refused(name, duplicate):
    assert duplicate in REFUSED[name]
    assert is_encrypted(REFUSED[name].replace(duplicate, b"", 1), allow_armor_header=False)
