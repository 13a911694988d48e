"""chatmaild.relay.listening: readiness from the kernel's socket tables, never by connecting."""

import socket

from chatmaild.relay import listening

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:E1C2 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st ...
   0: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A 0 0 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0 0 0
"""
UNIX = """\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 11 /tmp/s/run/doveauth/doveauth.socket
0000000000000000: 00000003 00000000 00000000 0001 03 12 /tmp/s/run/doveauth/doveauth.socket
0000000000000000: 00000003 00000000 00000000 0001 03 13 /tmp/connected only
0000000000000000: 00000002 00000000 00010000 0001 01 14 /tmp/with space.sock
0000000000000000: 00000002 00000000 00010000 0001 01 15
"""


def test_tcp_tables_give_the_listening_addresses_only():
    assert listening.parse_tcp(TCP) == {("127.0.0.1", 443), ("0.0.0.0", 25)}
    assert listening.parse_tcp(TCP6) == {("::1", 9090), ("::", 80)}
    assert listening.parse_tcp("") == set()


def test_unix_table_gives_listening_paths_only():
    assert listening.parse_unix(UNIX) == {
        "/tmp/s/run/doveauth/doveauth.socket",
        "/tmp/with space.sock",
    }


def test_wildcard_listeners_count_for_every_address():
    ls = listening.Listening(
        frozenset(listening.parse_tcp(TCP) | listening.parse_tcp(TCP6)),
        frozenset(listening.parse_unix(UNIX)),
    )
    assert ls.tcp_port(443) and ls.tcp_port(25) and ls.tcp_port(25, host="10.0.0.1")
    assert not ls.tcp_port(443, host="10.0.0.1") and not ls.tcp_port(587)
    assert ls.tcp_port(9090, host="::1") and ls.tcp_port(80, host="::1")
    assert ls.unix_path("/tmp/with space.sock") and not ls.unix_path("/tmp/connected only")


def test_a_real_listener_is_seen_and_never_connected_to(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    assert not listening.snapshot().tcp_port(port)
    server.listen()
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s.sock"))
    unix.listen()
    server.setblocking(False)
    try:
        now = listening.snapshot()
        assert now.tcp_port(port) and now.unix_path(tmp_path / "s.sock")
        try:
            server.accept()
            raise AssertionError("the check connected")
        except BlockingIOError:
            pass
    finally:
        server.close()
        unix.close()
