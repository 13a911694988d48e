"""A small SMTP server core (sans-I/O), its asyncio adapter and a reinjection client."""
