"""nginx and website rendering from chatmail.ini (chatmaild.render.nginx, chatmaild.web.site)."""

import dataclasses
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chatmaild.config import read_config
from chatmaild.relay.instance import make_certificate
from chatmaild.render.files import local_layout, production_layout, render_relay
from chatmaild.render.nginx import STREAM_MODULE, render_nginx
from chatmaild.web import site

from conftest import daemon_argv, daemon_env, require, require_tool, write_ini

NGINX_CONF = Path("/etc/nginx/nginx.conf")


def _config(tmp_path, domain="chat.example", **params):
    return read_config(write_ini(tmp_path / "chatmail.ini", mail_domain=domain, **params))


def _conf(config):
    return render_nginx(config, production_layout(config))[NGINX_CONF]


def test_render_writes_nginx_and_the_web_root(tmp_path):
    config = _config(tmp_path)
    files = render_relay(config, production_layout(config))
    web = Path("/var/www/html")
    for path in [
        NGINX_CONF,
        web / "index.html",
        web / "qr-new.svg",
        web / site.MTA_STS_PATH,
        web / site.AUTOCONFIG_PATH,
    ]:
        assert path in files


def test_alpn_map_and_listeners(tmp_path):
    conf = _conf(_config(tmp_path))
    assert re.search(
        r"map \$ssl_preread_alpn_protocols \$proxy \{\s+default 127\.0\.0\.1:8443;\s+"
        r"~\\bsmtp\\b 127\.0\.0\.1:8465;\s+~\\bimap\\b 127\.0\.0\.1:8993;\s+\}",
        conf,
    )
    # the PROXY-protocol hops lead to Postfix 465 and Dovecot 993
    assert "listen 127.0.0.1:8465 proxy_protocol;\n        proxy_pass 127.0.0.1:465;" in conf
    assert "listen 127.0.0.1:8993 proxy_protocol;\n        proxy_pass 127.0.0.1:993;" in conf
    assert "listen 443;" in conf and "listen [::]:443;" in conf
    assert "listen 127.0.0.1:8443 ssl http2 proxy_protocol default_server;" in conf
    assert "server_name chat.example mta-sts.chat.example;" in conf
    assert "server_name www.chat.example;" in conf
    assert "listen 127.0.0.1:8484;" in conf and "stub_status;" in conf
    assert "listen 80;" in conf and "proxy_pass http://127.0.0.1:402;" in conf  # ACME
    assert "server 127.0.0.1:10082;" in conf and "proxy_pass http://mxdeliv;" in conf
    assert f"load_module {STREAM_MODULE};" in conf
    assert "ssl_certificate /var/lib/acme/live/chat.example/fullchain;" in conf


def test_mxdeliv_location(tmp_path):
    """Bodies up to max_message_size over HTTP/1.1 with the client address; beyond it
    upstream's 413 text, not nginx's HTML page."""
    conf = _conf(_config(tmp_path, max_message_size="1000000"))
    location = conf[conf.index("location /mxdeliv {") :]
    location = location[: location.index("}")]
    assert "client_max_body_size 1000000;" in location
    assert "error_page 413 = @mxdeliv_too_large;" in location
    assert "proxy_http_version 1.1;" in location
    assert 'proxy_set_header Connection "";' in location
    assert "proxy_set_header X-Real-IP $remote_addr;" in location
    assert "return 413 '552 Message exceeds maximum size';" in conf


def test_get_new_redirects_only_with_a_real_certificate(tmp_path):
    redirect = "return 301 dcaccount:https://chat.example/new;"
    limit = "limit_req zone=newaccount burst=5 nodelay;"
    real = _conf(_config(tmp_path))
    assert real.count(redirect) == 2 and real.count(limit) == 2  # /new and the old CGI URL
    self_signed = _conf(_config(tmp_path, tls_cert="self"))
    assert redirect not in self_signed and self_signed.count(limit) == 2


def test_ipv4_relay_and_disable_ipv6(tmp_path):
    conf = _conf(_config(tmp_path, domain="192.0.2.7"))
    assert "server_name 192.0.2.7;" in conf and "www." not in conf
    assert "dcaccount" not in conf  # an IP relay's certificate is self-signed
    conf = _conf(_config(tmp_path, disable_ipv6="true"))
    assert "[::]" not in conf


def test_iroh_locations_only_for_the_relays_own_iroh_relay(tmp_path):
    assert _conf(_config(tmp_path)).count("proxy_pass http://127.0.0.1:3340;") == 3
    other = _conf(_config(tmp_path, iroh_relay="https://iroh.example.org"))
    assert "3340" not in other


@pytest.mark.parametrize(
    "listen, upstream",
    [
        ("127.0.0.1:3341", "http://127.0.0.1:3341"),
        ("0.0.0.0:3340", "http://127.0.0.1:3340"),
        ("[::]:3340", "http://[::1]:3340"),
        ("unix:/run/iroh/relay.sock", "http://unix:/run/iroh/relay.sock:"),
        ("", "http://127.0.0.1:3340"),
    ],
)
def test_iroh_locations_follow_iroh_relay_listen(tmp_path, listen, upstream):
    conf = _conf(_config(tmp_path, iroh_relay_listen=listen))
    assert conf.count(f"proxy_pass {upstream};") == 3


@pytest.mark.parametrize("folder", ["www", "/srv/www"])
def test_www_folder_replaces_the_website_but_not_the_well_known_files(tmp_path, folder):
    conf = _conf(_config(tmp_path, www_folder=folder))
    root = folder if folder.startswith("/") else tmp_path / folder
    assert f"root {root};" in conf
    assert "alias /var/www/html/.well-known/mta-sts.txt;" in conf


def test_an_ip_only_site_offers_no_dcaccount_link(tmp_path):
    """Delta Chat's strict TLS cannot take https://192.0.2.7/new: the site says how to get
    the dclogin: link that /new answers there."""
    index = site.render_site(_config(tmp_path, domain="192.0.2.7"))["index.html"]
    assert "dcaccount:" not in index
    assert "<code>https://192.0.2.7/new</code>" in index and "dclogin_url" in index


def test_site_files(tmp_path):
    config = _config(
        tmp_path,
        privacy_mail="dpo@chat.example",
        privacy_postal="<script>alert(1)</script>",
        max_mailbox_size="100M",
    )
    files = site.render_site(config)
    index = files["index.html"]
    assert 'href="dcaccount:https://chat.example/new"' in index
    assert "dpo@chat.example" in index and "100 MiB" in index
    assert "<script>" not in index and "&lt;script&gt;" in index
    assert files[site.MTA_STS_PATH] == (
        "version: STSv1\nmode: enforce\nmx: chat.example\nmax_age: 2419200\n"
    )
    root = ET.fromstring(files[site.AUTOCONFIG_PATH])
    ports = [int(p.text) for p in root.iter("port")]
    assert ports == [993, 143, 443, 465, 587, 443]
    assert files[site.QR_PATH].startswith("<svg")
    assert "not published privacy contacts" in site.render_site(_config(tmp_path))["index.html"]


def _nginx_t(conf_path):
    return subprocess.run(["nginx", "-t", "-c", str(conf_path)], capture_output=True, text=True)


def test_nginx_accepts_the_production_rendering(tmp_path):
    """`nginx -t` on the production file, with only the certificate, pid and log paths
    (which do not exist on a test machine) moved under tmp_path."""
    require(os.geteuid() == 0, "root (nginx -t opens the key and binds nothing)")
    require_tool("nginx", STREAM_MODULE)
    config = _config(tmp_path)
    layout = production_layout(config)
    web = dataclasses.replace(
        layout.web,
        pid=tmp_path / "nginx.pid",
        error_log=f"{tmp_path / 'error.log'} warn",
        temp_dir=tmp_path / "tmp",
        nginx_conf=tmp_path / "nginx.conf",
    )
    layout = dataclasses.replace(
        layout, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem", web=web
    )
    make_certificate(layout.tls_cert, layout.tls_key, config.mail_domain)
    (tmp_path / "tmp").mkdir()
    conf = render_nginx(config, layout)[web.nginx_conf]
    web.nginx_conf.write_text(conf)
    proc = _nginx_t(web.nginx_conf)
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr


def test_nginx_accepts_the_local_rendering(tmp_path):
    require(os.geteuid() == 0, "root")
    require_tool("nginx", STREAM_MODULE)
    config = _config(tmp_path)
    layout = local_layout(tmp_path / "state")
    for path, text in render_nginx(config, layout).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    make_certificate(layout.tls_cert, layout.tls_key, config.mail_domain)
    assert ":80;" not in layout.web.nginx_conf.read_text()  # a system nginx may hold 80
    layout.web.temp_dir.mkdir()
    (tmp_path / "state" / "log").mkdir()
    proc = _nginx_t(layout.web.nginx_conf)
    assert proc.returncode == 0, proc.stderr


def test_render_command_writes_nginx_and_the_web_root(tmp_path):
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="chat.example")
    out = tmp_path / "out"
    proc = subprocess.run(
        daemon_argv("chatmaild.relay", "render", "--config", ini, "--out", out),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    conf = (out / "etc/nginx/nginx.conf").read_text()
    assert "ssl_preread on;" in conf and "server_name chat.example" in conf
    xml = out / "var/www/html/.well-known/autoconfig/mail/config-v1.1.xml"
    assert ET.fromstring(xml.read_text()).find("emailProvider").get("id") == "chat.example"
    assert str(out / "etc/nginx/nginx.conf") in proc.stdout.splitlines()
