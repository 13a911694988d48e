"""What chatmail-web answers: `/new` (and the old `/cgi-bin/newemail.py`) hand out an account.

Synchronous and fast: a request reads the nocreate switch, the load and whether the drawn
address exists (a stat or two), then answers. nginx in front terminates TLS, rate-limits per
client address and redirects browsers' GET to `dcaccount:` on relays with a real certificate.
"""

import json
import logging
import os

from ..doveauth import sysres
from ..housekeeping.newemail import account_document
from . import account

log = logging.getLogger("chatmaild.web")

ACCOUNT_PATHS = frozenset(["/new", "/cgi-bin/newemail.py"])
JSON = "application/json"


def _json(obj):
    return (json.dumps(obj) + "\n").encode()


class WebApp:
    def __init__(self, config, read_resources=None, exists=os.path.exists, self_signed=None):
        """`self_signed`: the relay's certificate is not from a public CA, answers carry a
        `dclogin_url` (None: the ini's rule, housekeeping.credentials.uses_self_signed_cert)."""
        self.config = config
        self._self_signed = self_signed
        self._read_resources = read_resources or sysres.read_resources
        self._exists = exists
        self._home = str(config.mailboxes_dir) + "/"
        self.handed_out = 0
        self.refused = 0

    def handle(self, request):
        """(status, body, content type, extra headers) for one request."""
        if request.path not in ACCOUNT_PATHS:
            return 404, b"not found\n", "text/plain; charset=utf-8", ()
        if request.method not in ("POST", "GET"):
            return 405, b"use POST\n", "text/plain; charset=utf-8", (("Allow", "POST, GET"),)
        return self.new_account()

    def new_account(self):
        config = self.config
        refusal = account.refusal(
            config,
            self._exists(config.nocreate_file),
            self._read_resources(config.mailboxes_dir),
        )
        doc = None
        if refusal is None:
            doc, refusal = account.new_account(
                config,
                lambda a: self._exists(self._home + a),
                lambda c: account_document(c, self._self_signed),
            )
        if refusal is not None:
            self.refused += 1
            log.info("/new refused (%d): %s", refusal.status, refusal.reason)
            return refusal.status, _json({"reason": refusal.reason}), JSON, ()
        self.handed_out += 1
        return 200, _json(doc), JSON, ()
