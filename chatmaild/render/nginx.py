"""nginx of a chatmail relay, rendered from chatmail.ini: the port-443 ALPN multiplexer,
the HTTPS site (website, /new, MTA-STS, autoconfig, iroh-relay, mxdeliv) and stub_status.

`render_nginx(config, layout)` is pure and returns {absolute path: text}: nginx.conf and the
generated web root (chatmaild.web.site), placed as `layout.web` (weblayout.py) says.
"""

from pathlib import Path

from ..metrics.exporter import parse_listen_spec
from ..web.site import render_site
from .templating import substitute, template

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
IROH_RELAY_PORT = 3340
IROH_PATHS = ("/relay", "/ping", "/generate_204")
NEW_ACCOUNT_BURST = 5
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def site_root(config, web):
    """`www_folder` (relative to the ini's directory) replaces the generated website."""
    if not config.www_folder:
        return web.web_root
    folder = Path(config.www_folder)
    return folder if folder.is_absolute() else Path(config.path).parent / folder


def _indent(lines, depth):
    return "\n".join(" " * depth + line for line in lines)


def _new_account_location(config, web):
    lines = [
        f"limit_req zone=newaccount burst={NEW_ACCOUNT_BURST} nodelay;",
        "error_page 429 @limited;",
    ]
    if not web.self_signed:
        # A browser (GET) is sent to Delta Chat, which then POSTs here.
        lines.append(
            "if ($request_method = GET) { "
            f"return 301 dcaccount:https://{config.mail_domain}/new; }}"
        )
    lines += [
        "proxy_pass http://chatmail_web;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Real-IP $remote_addr;",
    ]
    return _indent(lines, 12)


def _iroh_upstream(config):
    """Where chatmail-iroh-relay listens (iroh_relay_listen; an address of any interface is
    reached on loopback); empty: 127.0.0.1:3340, where an iroh-relay of its own would be."""
    listen = parse_listen_spec(config.iroh_relay_listen)
    if listen is None:
        return f"http://127.0.0.1:{IROH_RELAY_PORT}"
    if listen.path is not None:
        return f"http://unix:{listen.path}:"
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(listen.host, listen.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{listen.port}"


def _iroh_locations(config):
    """Only a relay using its own iroh-relay (the default iroh_relay) proxies to it."""
    if config.iroh_relay.rstrip("/") != f"https://{config.mail_domain}":
        return "        # iroh_relay points elsewhere: no local iroh-relay to proxy to"
    upstream = _iroh_upstream(config)
    blocks = []
    for path in IROH_PATHS:
        lines = [
            f"location {path} {{",
            f"    proxy_pass {upstream};",
            "    proxy_http_version 1.1;",
        ]
        if path == "/relay":
            lines += [
                "    proxy_set_header Upgrade $http_upgrade;",
                '    proxy_set_header Connection "upgrade";',
            ]
        lines.append("}")
        blocks.append("\n" + _indent(lines, 8))
    return "".join(blocks)


def _www_redirect(config):
    if config.ipv4_relay:
        return ""
    return _indent(
        [
            "server {",
            "    listen 127.0.0.1:8443 ssl http2 proxy_protocol;",
            f"    server_name www.{config.mail_domain};",
            f"    return 301 https://{config.mail_domain}$request_uri;",
            "}",
        ],
        4,
    )


def _http_server(web):
    """Port 80: ACME challenges to acmetool (127.0.0.1:402), everything else to https."""
    if not web.http_listen:
        return ""
    return _indent(
        [
            "server {",
            *(f"    listen {addr};" for addr in web.http_listen),
            "    location /.well-known/acme-challenge/ {",
            "        proxy_pass http://127.0.0.1:402;",
            "    }",
            "    location / {",
            "        return 301 https://$host$request_uri;",
            "    }",
            "}",
        ],
        4,
    )


def _temp_paths(web):
    if web.temp_dir is None:
        return ""
    return _indent([f"{kind}_temp_path {web.temp_dir / kind};" for kind in TEMP_KINDS], 4)


def server_names(config):
    if config.ipv4_relay:
        return [config.mail_domain]
    return [config.mail_domain, f"mta-sts.{config.mail_domain}"]


def nginx_conf(config, layout, web):
    values = {
        "mail_domain": config.mail_domain,
        "stream_module": STREAM_MODULE,
        "user": web.user,
        "worker_processes": web.worker_processes,
        "pid": web.pid,
        "error_log": web.error_log,
        "stream_listen": _indent([f"listen {addr};" for addr in web.stream_listen], 8),
        "extra_servers": "".join(
            block + "\n\n" for block in (_www_redirect(config), _http_server(web)) if block
        ),
        "access_log": web.access_log,
        "temp_paths": _temp_paths(web),
        "tls_cert": layout.tls_cert,
        "tls_key": layout.tls_key,
        "web_socket": web.web_socket,
        "server_names": " ".join(server_names(config)),
        "site_root": site_root(config, web),
        "web_root": web.web_root,
        "new_account": _new_account_location(config, web),
        "max_message_size": config.max_message_size,
        "mxdeliv_port": config.filtermail_http_port_incoming,
        "iroh_locations": _iroh_locations(config),
    }
    return substitute(template("nginx/nginx.conf"), values)


def render_nginx(config, layout):
    """{absolute path: text}: nginx.conf and the generated web root (none without layout.web)."""
    web = layout.web
    if web is None:
        return {}
    files = {web.nginx_conf: nginx_conf(config, layout, web)}
    for rel, text in render_site(config).items():
        files[web.web_root / rel] = text
    return files
