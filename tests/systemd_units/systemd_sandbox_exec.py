"""Apply the in-process part of a unit's sandbox, then exec the daemon.

Run inside bwrap, after setpriv switched to the unit's user:

    python systemd_sandbox_exec.py --umask 0077 --mdwe --errno 1 --syscalls FILE \
        --families 1,2,10 -- ARGV...

- UMask=: umask(2).
- MemoryDenyWriteExecute=: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) (Linux >= 6.3),
  inherited across execve; it refuses W+X mappings and making writable memory
  executable, as systemd's seccomp rule does.
- SystemCallFilter= / SystemCallErrorNumber= / SystemCallArchitectures=native /
  RestrictAddressFamilies=: one seccomp filter built with libseccomp (through ctypes):
  syscalls outside the allow list fail with the errno, socket() of a family outside the
  list fails with EAFNOSUPPORT, foreign architectures are killed.
"""

import argparse
import ctypes
import ctypes.util
import errno
import os
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
MAX_FAMILY = 64


def scmp_act_errno(code):
    return 0x00050000 | (code & 0xFFFF)


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def set_mdwe():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_MDWE): {os.strerror(err)}")


def load_seccomp(syscalls, error_number, families):
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ScmpArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_act_errno(error_number))
    if not ctx:
        raise OSError("seccomp_init failed")

    def rule(action, nr, *cmps):
        array = (ScmpArgCmp * max(1, len(cmps)))(*cmps)
        rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add_array({nr}): {os.strerror(-rc)}")

    for name in sorted(syscalls):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0 or (families is not None and name == "socket"):
            continue  # not a syscall of this architecture, or handled below
        rule(SCMP_ACT_ALLOW, nr)
    if families is not None and "socket" in syscalls:
        nr = lib.seccomp_syscall_resolve_name(b"socket")
        for family in range(MAX_FAMILY):
            action = SCMP_ACT_ALLOW if family in families else scmp_act_errno(errno.EAFNOSUPPORT)
            rule(action, nr, ScmpArgCmp(0, SCMP_CMP_EQ, family, 0))
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--umask", type=lambda s: int(s, 8))
    parser.add_argument("--mdwe", action="store_true")
    parser.add_argument("--syscalls", help="file with one allowed syscall name per line")
    parser.add_argument("--errno", type=int, default=errno.EPERM)
    parser.add_argument("--families", help="comma-separated allowed socket families")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.umask is not None:
        os.umask(args.umask)
    if args.mdwe:
        set_mdwe()
    if args.syscalls:
        with open(args.syscalls) as f:
            syscalls = {line.strip() for line in f if line.strip()}
        families = None
        if args.families is not None:
            families = {int(x) for x in args.families.split(",") if x}
        load_seccomp(syscalls, args.errno, families)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
