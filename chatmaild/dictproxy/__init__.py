"""Dovecot dict protocol: a sans-I/O codec (`proto`) and an asyncio unix-socket `server`."""

from .server import DictFailure, Transaction, run_dict_service, serve_unix

__all__ = ["DictFailure", "Transaction", "run_dict_service", "serve_unix"]
