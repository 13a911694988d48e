"""A complete chatmail relay: Postfix + Dovecot configuration rendered from chatmail.ini,
and a command that runs it on this machine with our daemons (`python -m chatmaild.relay`)."""
