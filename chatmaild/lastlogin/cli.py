"""`lastlogin SOCKET CONFIG`: the dict service Dovecot's last_login plugin writes to."""

from ..dictproxy.entry import dict_service_main
from .service import LastLoginService


def main(argv=None):
    dict_service_main(
        "lastlogin",
        __doc__.split(":", 1)[1].strip(),
        LastLoginService,
        lambda config: config.metrics_lastlogin,
        argv,
    )


if __name__ == "__main__":
    main()
