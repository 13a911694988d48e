"""Where a relay's nginx files live, and the knobs of a private instance (no I/O).

`production_web_layout` is a Debian relay's (/etc/nginx, /var/www/html, the chatmail-web
unit's socket); `local_web_layout` the test relay's, everything under its state directory,
loopback only, logs to files.
"""

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class WebLayout:
    nginx_conf: Path
    web_root: Path  # the generated files (website, .well-known)
    web_socket: Path  # chatmail-web's unix socket, nginx's upstream for /new
    # No certificate from a CA: browsers' GET on /new is answered, not sent to dcaccount:.
    self_signed: bool
    stream_listen: tuple = ("443", "[::]:443")
    http_listen: tuple = ("80", "[::]:80")
    pid: Path = Path("/run/nginx.pid")
    error_log: str = "/var/log/nginx/error.log warn"
    access_log: str = "off"  # no client addresses kept on a production relay
    temp_dir: Path | None = None  # None: nginx's compiled-in /var/lib/nginx
    user: str = "www-data"
    worker_processes: str = "auto"


def production_web_layout(config, self_signed):
    listen = ("443",) if config.disable_ipv6 else ("443", "[::]:443")
    http = ("80",) if config.disable_ipv6 else ("80", "[::]:80")
    return WebLayout(
        nginx_conf=Path("/etc/nginx/nginx.conf"),
        web_root=Path("/var/www/html"),
        web_socket=Path("/run/chatmail-web/web.socket"),
        self_signed=self_signed,
        stream_listen=listen,
        http_listen=http,
    )


def local_web_layout(state_dir, self_signed=True, address=None):
    s = Path(state_dir)
    extra = () if address is None else (f"{address}:443",)
    return WebLayout(
        nginx_conf=s / "nginx" / "nginx.conf",
        web_root=s / "www",
        web_socket=s / "run" / "chatmail-web" / "web.socket",
        self_signed=self_signed,
        stream_listen=("127.0.0.1:443", *extra),
        http_listen=(),  # no port 80: no ACME here, and a system nginx may hold it
        pid=s / "nginx" / "nginx.pid",
        error_log=f"{s / 'log' / 'nginx-error.log'} info",
        access_log=str(s / "log" / "nginx-access.log"),
        temp_dir=s / "nginx-tmp",
        worker_processes="1",
    )
