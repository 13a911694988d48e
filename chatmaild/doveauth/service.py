"""doveauth: passdb/userdb lookups over the dict protocol, creating accounts on first login.

Lookups of existing accounts are answered synchronously (one small file read). A first login
runs its checks, the SHA512-CRYPT hashing and the file creation in a thread pool (the hash
releases the interpreter lock, so creations use every core and never stall the event loop).
Concurrent first logins for one address share one creation in this process; across
processes `User.create` keeps it exactly-once. Every racer is answered with the stored record.
A userdb lookup of an address whose creation is in flight waits for it (an iteration waits
for every creation in flight), so a pipelined passdb-then-userdb pair on one connection is
answered as if handled one after the other.
"""

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ..mailbox import PASSWORD, InvalidAddress, Mailboxes
from ..metrics.doveauth import DoveauthMetrics
from . import hashing, rules, sysres

log = logging.getLogger("chatmaild.doveauth")


def worker_count(cpus: int | None = None) -> int:
    """Threads that create accounts: one per core, at least two. The hash releases the
    interpreter lock, so they hash on every core at once; more threads than cores only
    crowded out the event loop's thread (lookups waited up to 0.1 s behind creations in
    benchmarks/bench_dictproxy.py on a busy machine) and created no faster."""
    return max(2, cpus or os.cpu_count() or 2)


class DoveauthService:
    def __init__(self, config, workers: int | None = None, read_resources=None, metrics=None):
        self.config = config
        self.metrics = metrics if metrics is not None else DoveauthMetrics()
        lookups = self.metrics.lookup
        self._userdb_found = lookups[("userdb", "found")]
        self._userdb_notfound = lookups[("userdb", "notfound")]
        self._passdb_found = lookups[("passdb", "found")]
        self._passdb_notfound = lookups[("passdb", "notfound")]
        self._passdb_created = lookups[("passdb", "created")]
        self.mailboxes = Mailboxes(config.mailboxes_dir, config.address_domain)
        self._home_prefix = str(config.mailboxes_dir) + "/"
        self._read_resources = read_resources or sysres.CachedResources()
        self._workers = workers or worker_count()
        self._executor = None
        self._creating = {}  # addr -> Future of the stored hash (or None)

    # -- dict service interface ----------------------------------------------------------------

    def lookup(self, key, user):
        if key.startswith(rules.USERDB_PREFIX):
            addr = key[len(rules.USERDB_PREFIX) :]
            pending = self._creating.get(addr)
            if pending is not None:
                return self._userdb_after_creation(addr, pending)
            return self._counted_userdb(self.userdb_lookup(addr))
        if key.startswith(rules.PASSDB_PREFIX):
            rest = key[len(rules.PASSDB_PREFIX) :]
            parsed = rules.split_passdb_key(rest)
            if parsed is None:
                # `passdb/<user>` (auth.conf's key): existing accounts only, never a creation
                result = self.userdb_lookup(rules.unescape_user(rest))
            else:
                password, addr = parsed
                result = self.passdb_lookup(addr, password)
            if result is None:
                self._passdb_notfound.inc()
            elif isinstance(result, str):
                self._passdb_found.inc()
            return result
        return None

    def iterate(self, path, user, flags):
        if not rules.USERDB_PREFIX.startswith(path) and not path.startswith(rules.USERDB_PREFIX):
            return ()
        self.metrics.lookup[("iterate", "found")].inc()
        return self._userdb_rows_after(list(self._creating.values()))

    def commit(self, txn):
        log.warning("doveauth does not accept writes (%d changes refused)", len(txn.ops))
        return False

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
            self._executor = None

    # -- lookups -------------------------------------------------------------------------------

    def _checked(self, addr):
        """`addr` if it may name a mailbox (no file system call), else None with a log line."""
        try:
            return self.mailboxes.check_address(addr)
        except InvalidAddress as exc:
            log.info("lookup refused: %s", exc)
            return None

    def _read_stored(self, addr):
        """The stored hash of a checked `addr`, or None (as `User.read_password`, but on the
        hot path: one open and read on a string path, no Path objects)."""
        try:
            fd = os.open(self._home_prefix + addr + "/" + PASSWORD, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        return data.decode("ascii", "replace").strip() or None

    def record(self, addr, password_hash):
        """The JSON user record Dovecot gets for both passdb and userdb."""
        return json.dumps(
            {
                "addr": addr,
                "home": self._home_prefix + addr,
                "uid": "vmail",
                "gid": "vmail",
                "password": password_hash,
            }
        )

    def userdb_lookup(self, addr):
        if self._checked(addr) is None:
            return None
        stored = self._read_stored(addr)
        return None if stored is None else self.record(addr, stored)

    def _counted_userdb(self, result):
        (self._userdb_notfound if result is None else self._userdb_found).inc()
        return result

    async def _userdb_after_creation(self, addr, pending):
        """A userdb lookup of an address being created is answered once the creation ended,
        so it sees the account that a passdb lookup before it (on this connection or another)
        is creating. Only lookups of that address wait; everything else is answered at once.
        """
        await asyncio.wait((pending,))
        return self._counted_userdb(self.userdb_lookup(addr))

    def passdb_lookup(self, addr, password):
        if self._checked(addr) is None:
            return None
        stored = self._read_stored(addr)
        if stored is not None:
            return self.record(addr, stored)
        pending = self._creating.get(addr)
        if pending is None:
            problem = rules.creation_problem(addr, password, self.config)
            if problem is not None:
                log.info("not creating %s: %s", addr, problem)
                self.metrics.rejected_for(problem)
                return None
            pending = self._start_creation(self.mailboxes.user(addr), password)
        return self._answer_creation(addr, pending)

    async def _userdb_rows_after(self, pending):
        """The listing, once the creations in flight when it was asked for have ended."""
        if pending:
            await asyncio.wait(pending)
        return await asyncio.get_running_loop().run_in_executor(None, self._userdb_rows)

    def _userdb_rows(self):
        prefix = rules.USERDB_PREFIX
        return [(prefix + addr, "") for addr in self.mailboxes.iter_addresses()]

    # -- creation ------------------------------------------------------------------------------

    def _start_creation(self, user, password):
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="doveauth")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._create, user, password)
        addr = user.addr
        self._creating[addr] = future
        future.add_done_callback(lambda _: self._creating.pop(addr, None))
        return future

    async def _answer_creation(self, addr, pending):
        stored = await asyncio.shield(pending)
        if stored is None:
            self._passdb_notfound.inc()
            return None
        self._passdb_created.inc()
        return self.record(addr, stored)

    def _create(self, user, password):
        """In a worker thread: the system checks, hashing and exactly-once creation."""
        config = self.config
        if os.path.exists(config.nocreate_file):
            log.info("not creating %s: %s exists", user.addr, config.nocreate_file)
            self.metrics.rejected("nocreate")
            return None
        problem = rules.resource_problem(self._read_resources(config.mailboxes_dir), config)
        if problem is not None:
            log.warning("registration rejected: %s", problem)
            self.metrics.rejected_for(problem)
            return None
        try:
            started = time.perf_counter()
            password_hash = hashing.hash_password(password)
            self.metrics.hash_seconds.observe(time.perf_counter() - started)
        except ValueError as exc:
            log.warning("not creating %s: %s", user.addr, exc)
            self.metrics.rejected("other")
            return None
        stored = user.create(password_hash)
        if stored == password_hash:
            log.info("Created address: %s", user.addr)
            self.metrics.accounts_created.inc()
        return stored
