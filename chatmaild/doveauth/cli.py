"""`doveauth SOCKET CONFIG`: the passdb/userdb dict service Dovecot's auth-worker talks to."""

from ..dictproxy.entry import dict_service_main
from .service import DoveauthService


def main(argv=None):
    dict_service_main(
        "doveauth",
        __doc__.split(":", 1)[1].strip(),
        DoveauthService,
        lambda config: config.metrics_doveauth,
        argv,
    )


if __name__ == "__main__":
    main()
