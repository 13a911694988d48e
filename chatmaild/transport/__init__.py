"""filtermail transport: Postfix's default_transport (LMTP on 127.0.0.1:10083) that delivers
to other relays with `POST https://<mx>/mxdeliv` first and SMTP on port 25 as the fallback.
See docs/transport.md."""
