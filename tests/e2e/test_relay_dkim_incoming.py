"""Interop: mail signed by the relay's real OpenDKIM passes filtermail incoming's DKIM check.

A message submitted to the relay is signed by Debian's OpenDKIM on its way out; the stored
copy, as it crossed SMTP, is then sent into a filtermail incoming (on the host, check on)
whose key lookups go to a private unbound serving the relay's TXT record. It must be
re-injected unchanged; altered, it must be refused. So our verifier accepts exactly what a
sending chatmail relay produces (relaxed/simple, oversigned headers, 2048-bit key).
"""

from dkim_samples import SELECTOR
from filtermail_server_helpers import Client, Filter, RecordingSink
from unbound_instance import Unbound, require_unbound, txt

from chatmaild.filtermail.dkimkeys import KeyFetcher
from chatmaild.render.opendkim import txt_value

from .helpers import encrypted_message, maildir_messages, wire_form


def signed_by_relay(relay) -> bytes:
    a, pa = relay.new_account()
    b, pb = relay.new_account()
    marker, message = encrypted_message(a, [b])
    assert relay.submit(465, a, pa, a, [b], message) == {}
    relay.wait_delivered(b, pb, marker)
    (stored,) = [m for m in maildir_messages(relay.user_dir(b)) if marker.encode() in m]
    return a, wire_form(stored)


async def test_opendkim_signature_passes_filtermail_incoming(relay, tmp_path):
    require_unbound()
    assert relay.relay.dkim is not None, "the local relay for chat.example signs"
    record = txt_value(relay.relay.dkim.key_file.read_bytes())
    sender, wire = signed_by_relay(relay)
    assert b"DKIM-Signature:" in wire
    zones = {relay.domain: [(f"{SELECTOR}._domainkey", 300, "TXT", txt(record))]}
    with Unbound(tmp_path / "unbound", zones) as dns:
        sink = await RecordingSink().start()
        fetcher = KeyFetcher(("127.0.0.1", dns.port), timeout=2.0)
        try:
            async with Filter(
                tmp_path, "incoming", sink.port, key_fetcher=fetcher, filtermail_dkim_check="true"
            ) as f:
                client = await Client.connect(f.port)
                code, text = await client.send_mail(sender, ["bob@chat.example"], wire)
                assert code == 250, text
                altered = await client.send_mail(
                    sender, ["bob@chat.example"], wire + b"appended\r\n"
                )
                assert altered == (550, "5.7.1 No valid DKIM signature found")
                await client.close()
        finally:
            await sink.stop()
        assert dns.queries() == 1  # the key was fetched once, then cached
    assert [m.data for m in sink.messages] == [wire]
