"""doveauth: Dovecot passdb/userdb over the dict protocol, with create-on-first-login."""
