"""chatmail-logmetrics --follow: tailing log files across truncation and rotation."""

import asyncio
import os

from chatmaild.metrics.follow import FileFollower
from chatmaild.metrics.logmetrics import LogMetrics, start
from chatmaild.metrics.scrape import samples

POSTFIX_SENT = (
    b"Nov 30 07:29:00 chat postfix/lmtp[24043]: 7C2BD22C6AC: to=<a@chat.example>, "
    b"relay=chat.example[private/dovecot-lmtp], delay=0.03, dsn=2.0.0, status=sent (250 Saved)"
)
DOVECOT_SAVED = (
    b"Nov 30 07:29:00 lmtp(a@chat.example)<24022><6LrjHrwlDWvWXQAA0J78UA>: Info: "
    b"msgid=<x@relay.test>: saved mail to INBOX"
)


class Sink:
    def __init__(self):
        self.lines = []
        self.dropped = 0

    def feed(self, line):
        self.lines.append(line)

    def drop(self):
        self.dropped += 1


def follower(path, sink, **kw):
    return FileFollower(path, sink.feed, sink.drop, **kw)


def append(path, data):
    with open(path, "ab") as f:
        f.write(data)


def test_existing_file_is_read_from_its_end(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"old 1\nold 2\n")
    sink = Sink()
    f = follower(log, sink)
    assert f.poll() == 0
    append(log, b"new 1\nnew 2\n")
    assert f.poll() == 2
    assert sink.lines == [b"new 1", b"new 2"]


def test_from_start_reads_existing_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"old 1\n")
    sink = Sink()
    follower(log, sink, from_start=True).poll()
    assert sink.lines == [b"old 1"]


def test_file_that_appears_later_is_read_from_its_start(tmp_path):
    log = tmp_path / "late.log"
    sink = Sink()
    f = follower(log, sink)
    assert f.poll() == 0
    log.write_bytes(b"first\nsecond\n")
    assert f.poll() == 2
    assert sink.lines == [b"first", b"second"]


def test_partial_line_waits_for_its_newline(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink)
    append(log, b"half a li")
    assert f.poll() == 0
    append(log, b"ne\r\nnext\n\n")
    assert f.poll() == 2
    assert sink.lines == [b"half a line", b"next"]


def test_truncation_restarts_at_zero(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink)
    append(log, b"a long first line before truncation\n")
    f.poll()
    with open(log, "wb") as fh:  # copytruncate
        fh.write(b"after\n")
    assert f.poll() == 1
    assert sink.lines[-1] == b"after"


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink)
    append(log, b"one\n")
    f.poll()
    append(log, b"two\nthree-without-newline")
    os.rename(log, tmp_path / "x.log.1")
    assert f.poll() == 1  # "two"; nothing at the path: keep the old file, wait for a newline
    append(tmp_path / "x.log.1", b"\n")
    f.poll()
    log.write_bytes(b"four\n")
    f.poll()
    assert sink.lines == [b"one", b"two", b"three-without-newline", b"four"]


def test_rotated_file_last_line_without_newline_is_kept(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink)
    append(log, b"last")
    os.rename(log, tmp_path / "x.log.1")
    log.write_bytes(b"new\n")
    f.poll()
    assert sink.lines == [b"last", b"new"]


def test_reads_are_bounded_per_poll(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink, max_bytes=100)
    append(log, b"".join(b"line %03d\n" % i for i in range(50)))  # 9 bytes each
    assert f.poll() == 11  # 100 bytes: 11 whole lines, the 12th waits
    polls = 1
    while f.poll():
        polls += 1
    assert len(sink.lines) == 50 and polls == 5
    assert sink.lines[-1] == b"line 049"


def test_overlong_line_is_dropped_and_counted(tmp_path):
    log = tmp_path / "x.log"
    log.touch()
    sink = Sink()
    f = follower(log, sink, max_line=20)
    append(log, b"short\n" + b"x" * 50)
    f.poll()
    append(log, b"y" * 50 + b"\nafter\n" + b"z" * 30 + b"\n")
    f.poll()
    assert sink.lines == [b"short", b"after"]
    assert sink.dropped == 2


def test_unreadable_file_is_retried(tmp_path):
    log = tmp_path / "x.log"
    log.mkdir()  # opening a directory for reading fails
    sink = Sink()
    f = follower(log, sink)
    assert f.poll() == 0 and f.error
    log.rmdir()
    log.write_bytes(b"now\n")
    assert f.poll() == 1


async def test_service_follows_files_and_counts(tmp_path):
    postfix, dovecot, daemon = tmp_path / "postfix.log", tmp_path / "dovecot.log", tmp_path / "d"
    postfix.write_bytes(POSTFIX_SENT + b"\n")  # before the start: not counted
    metrics = LogMetrics()
    running = await start(
        metrics, "127.0.0.1:0", [], [], [postfix, dovecot, daemon], poll_interval=0.01
    )
    try:
        append(postfix, POSTFIX_SENT + b"\n")
        dovecot.write_bytes(DOVECOT_SAVED + b"\n")
        daemon.write_bytes(
            b"Outgoing: Filtering encrypted mail.\n"
            b"Outgoing: Filtering unencrypted mail. Rejected unencrypted mail. from <a@b>\n"
            b"bad \xff utf-8\n"
        )
        for _ in range(500):
            if metrics.counters.counts["lines"] == 4:
                break
            await asyncio.sleep(0.01)
        host, port = running.server.sockets[0].getsockname()[:2]
        got = await asyncio.to_thread(samples, (host, port))
    finally:
        await running.close()

    def value(name, **labels):
        return got[(name, tuple(sorted(labels.items())))]

    assert value("chatmail_deliveries_total", kind="local") == 1
    assert value("delivered_mail", prog="delivered_mail.mtail") == 1
    assert value("outgoing_filtered_mail_count", prog="delivered_mail.mtail") == 2
    assert value("outgoing_rejected_unencrypted_mail_count", prog="delivered_mail.mtail") == 1
    assert value("chatmail_encrypted_ratio") == 0.5
    assert value("chatmail_logmetrics_lines_total") == 4
    assert value("chatmail_logmetrics_malformed_total") == 1
