"""`python -m chatmaild.relay up|down|status|render|dkim-record|dns`: wiring and signals only."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from chatmaild.relay.federation import (
    DEFAULT_PAIR_NETNS,
    DEFAULT_PAIR_STATE_DIR,
    RelayPair,
    is_pair_dir,
)
from chatmaild.relay.instance import DEFAULT_STATE_DIR, Relay, RelayError
from chatmaild.render.apply import apply_files
from chatmaild.render.files import production_layout, push_script_text, render_relay
from chatmaild.render.opendkim import genkey_command, signing_layout, txt_value, zone_line
from chatmaild.render.serverfiles import render_server_files


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m chatmaild.relay",
        description="Run a complete chatmail relay (Postfix, Dovecot, chatmaild daemons) here.",
    )
    p.add_argument("command", choices=["up", "down", "status", "render", "dkim-record", "dns"])
    p.add_argument(
        "--config",
        help="chatmail.ini to use (default: an embedded demo config for chat.example); "
        "for `render`, the ini of the server to render for",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        help="where configs, queue, sockets, logs and mailboxes live "
        f"(default {DEFAULT_STATE_DIR})",
    )
    p.add_argument("--netns", help="run the relay inside this private network namespace")
    p.add_argument(
        "--pair",
        action="store_true",
        help="two relays (relay-a.test, relay-b.test) that deliver to each other, "
        "in namespaces NETNS-a and NETNS-b (default chatmaild-pair-a/-b), state under "
        f"STATE_DIR/a and /b (default {DEFAULT_PAIR_STATE_DIR})",
    )
    p.add_argument(
        "--foreground",
        action="store_true",
        help="with up: stay until Ctrl-C/SIGTERM, then tear everything down",
    )
    p.add_argument(
        "--out",
        help="with render: write the production configuration under this directory",
    )
    p.add_argument(
        "--root",
        help="with render: apply the production configuration to the file system under ROOT "
        "(`/` on the server): only files whose content differs are written, atomically, "
        'keeping owner and mode; prints JSON {"changed": [...], "unchanged": [...]}',
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with render --root: write nothing, report what would change",
    )
    p.add_argument(
        "--dkim-key",
        help="with render, dkim-record or dns: the DKIM private key whose DNS record to print "
        "(render also writes it to DIR/etc/dkimkeys/opendkim.txt)",
    )
    dns = p.add_argument_group("dns: the records to publish, as a zone snippet")
    dns.add_argument("--ipv4", help="the server's IPv4 address (else a placeholder)")
    dns.add_argument("--ipv6", help="the server's IPv6 address, if it has one")
    dns.add_argument(
        "--caa", metavar="CA_DOMAIN", help="add a CAA record for this CA (e.g. letsencrypt.org)"
    )
    dns.add_argument("--ttl", type=int, default=3600, help="TTL of the printed records")
    dns.add_argument(
        "--check",
        action="store_true",
        help="look each record up and print ok / missing / different; exit 1 when a "
        "required one is missing or different",
    )
    dns.add_argument("--nameserver", help="with --check: ask this resolver (IP or IP:PORT)")
    return p


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def _state_kept(state_dir):
    return (
        f"Its state stays in {state_dir} (config, mailboxes, DKIM key, logs): the next `up`"
        f" with this state dir uses it again; `rm -r {state_dir}` removes it."
    )


def _state_dir(args):
    if args.state_dir:
        return args.state_dir
    if args.pair:
        return str(DEFAULT_PAIR_STATE_DIR)
    return str(DEFAULT_STATE_DIR)


def _from_state(args):
    """The relay, or the relay pair, that an earlier `up` left in the state dir."""
    state_dir = _state_dir(args)
    if is_pair_dir(state_dir):
        return RelayPair.from_state(state_dir, log=_log)
    return Relay.from_state(state_dir, log=_log)


def cmd_up(args):
    if args.pair:
        if args.config:
            _log("--pair runs two relays on embedded configs: --config does not apply")
            return 2
        netns = args.netns or DEFAULT_PAIR_NETNS
        relay = RelayPair(_state_dir(args), netns, log=_log)
    else:
        relay = Relay(_state_dir(args), config_path=args.config, netns=args.netns, log=_log)
    if not args.foreground:
        relay.up()
        print(relay.client_info(), flush=True)
        return 0
    # Handlers, not a blocked signal mask: children would inherit the mask and then
    # ignore the SIGTERM that stops them.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    try:
        relay.up()  # on a signal during start-up, up() itself tears down
        print(relay.client_info(), flush=True)
        print("Running in the foreground: Ctrl-C stops the relay.", flush=True)
        while True:
            signal.pause()
    except _Stop as e:
        _log(f"got {e}: stopping the relay")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        relay.down()
        _log("relay stopped")
        _log(_state_kept(relay.state_dir))
    return 0


def cmd_down(args):
    relay = _from_state(args)
    relay.down()
    _log(f"relay in {relay.state_dir} stopped")
    _log(_state_kept(relay.state_dir))
    return 0


def cmd_status(args):
    relay = _from_state(args)
    status = relay.status()
    if isinstance(relay, RelayPair):
        print(f"relay pair in {relay.state_dir}: {', '.join(relay.domains)}")
        for name, running in status.items():
            print(f"  {name:24} {'running' if running else 'stopped'}")
        return 0 if status and all(status.values()) else 1
    where = f" (network namespace {relay.netns})" if relay.netns else ""
    print(f"relay in {relay.state_dir}{where}, domain {relay.config.mail_domain}")
    for name, running in status.items():
        print(f"  {name:22} {'running' if running else 'stopped'}")
    for name in relay.skipped:
        print(f"  {name:22} not in this checkout")
    return 0 if status and all(status.values()) else 1


def production_files(config):
    """Every file of a production server rendered from `config`: {absolute path: text}."""
    layout = production_layout(config, push=push_script_text() is not None)
    files = render_relay(config, layout)
    files.update(render_server_files(config))
    return layout, files


def cmd_render(args):
    from chatmaild.config import load_config_or_exit

    if not args.config or bool(args.out) == bool(args.root):
        _log("render needs --config INI and one of --out DIR or --root ROOT")
        return 2
    config = load_config_or_exit(args.config)
    layout, files = production_files(config)
    if args.root:
        changed, unchanged = apply_files(files, args.root, dry_run=args.dry_run)
        print(json.dumps({"changed": changed, "unchanged": unchanged}, indent=1))
        return 0
    out = Path(args.out)
    dkim = signing_layout(config, layout.dkim)
    if dkim is not None and args.dkim_key:
        record = zone_line(config.mail_domain, txt_value(Path(args.dkim_key).read_bytes()))
        files[dkim.record_file] = record + "\n"
    for path, text in files.items():
        target = out / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)
    if dkim is not None and not args.dkim_key:
        # keys are made on the server, never written into a rendering
        _log(f"no DKIM key rendered; on the server: {genkey_command(config.mail_domain, dkim)}")
        show = f"{sys.executable} -m chatmaild.relay dkim-record --config {args.config}"
        _log(f"then print its DNS record: {show}")
    elif dkim is not None:
        print(files[dkim.record_file], end="")
    if layout.turn is not None:
        # the TURN secret too is made on the server, in coturn's database (docs/turn.md)
        _log(f"TURN secret: on the server, as root: chatmail-turn init-secret {args.config}")
    return 0


def cmd_dkim_record(args):
    """The DNS record of a key: --dkim-key FILE, else the server's key for --config, else
    the key of the local relay in --state-dir."""
    config, dkim = _relay_config_and_dkim(args)
    if dkim is None:
        _log(f"{config.mail_domain} is an IP-only relay: it signs nothing, no DKIM record")
        return 1
    key = Path(args.dkim_key) if args.dkim_key else dkim.key_file
    try:
        print(zone_line(config.mail_domain, txt_value(key.read_bytes())))
    except OSError as e:
        _log(f"cannot read the DKIM key: {e}")
        return 1
    return 0


def _relay_config_and_dkim(args):
    """(config, DKIM signing layout or None) of --config (the server's layout) or else the
    local relay in --state-dir."""
    if args.config:
        from chatmaild.config import load_config_or_exit

        config = load_config_or_exit(args.config)
        return config, signing_layout(config, production_layout(config).dkim)
    relay = Relay.from_state(_state_dir(args), log=_log)
    return relay.config, relay.dkim


def _relay_config_and_key(args):
    """(config, DKIM key file or None) as _relay_config_and_dkim; --dkim-key overrides the
    key file."""
    config, dkim = _relay_config_and_dkim(args)
    key = Path(args.dkim_key) if args.dkim_key else dkim.key_file if dkim else None
    return config, key


def cmd_dns(args):
    """Print the zone snippet of the relay, or with --check compare it with what DNS says."""
    from chatmaild.render import dnsrecords
    from chatmaild.web.site import mta_sts_policy

    config, key = _relay_config_and_key(args)
    domain = config.mail_domain
    if config.ipv4_relay:
        print(f"; {domain} is an IP-only relay: it publishes no DNS records")
        return 0
    dkim = None
    try:
        dkim = txt_value(key.read_bytes()) if key is not None else None
    except (OSError, ValueError) as e:
        _log(f"no DKIM key record: cannot read {key}: {e}")
    records = dnsrecords.relay_records(
        domain,
        ipv4=args.ipv4,
        ipv6=args.ipv6,
        dkim=dkim,
        mta_sts=dnsrecords.mta_sts_id(mta_sts_policy(config)),
        caa=args.caa,
    )
    if not args.check:
        print(f"; DNS records of the chatmail relay {domain} (python -m chatmaild.relay dns)")
        for line in dnsrecords.zone_lines(records, args.ttl):
            print(line)
        if args.ipv4 is None:
            _log("the A records need the server's address: --ipv4 ADDR (and --ipv6 ADDR)")
        return 0
    return _check_dns(records, args.nameserver)


def _check_dns(records, nameserver):
    from chatmaild.render import dnscheck, dnsrecords

    resolver = dnscheck.resolver(nameserver)
    failed = 0
    for check in dnsrecords.checks(records):
        try:
            published = dnscheck.lookup(resolver, check.name, check.type)
        except dnscheck.LookupFailed as e:
            print(f"{'error':<9} {check.name} {check.type}: no answer ({e})")
            failed += check.required
            continue
        status = dnsrecords.compare(check, published)
        print(dnsrecords.check_line(check, status, published))
        failed += check.required and status != dnsrecords.OK
    if failed:
        _log(f"{failed} required record(s) missing, different or not answered")
    return 1 if failed else 0


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command not in ("render", "dkim-record", "dns") and os.geteuid() != 0:
        _log("the relay runs Postfix and Dovecot: run this as root")
        return sys.exit(1)
    handler = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "render": cmd_render,
        "dkim-record": cmd_dkim_record,
        "dns": cmd_dns,
    }
    try:
        sys.exit(handler[args.command](args))
    except RelayError as e:
        _log(f"error: {e}")
        sys.exit(1)
