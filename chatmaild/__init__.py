"""chatmaild: the asyncio daemons of a chatmail relay (Postfix + Dovecot + Delta Chat)."""

__version__ = "0.1.0"
