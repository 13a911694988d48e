"""The relay's web front: account creation over HTTPS (`/new`) and the website files.

nginx terminates TLS and routes; `chatmail-web` (server.py) answers `/new` behind it on a
unix socket; site.py renders the static pages, autoconfig XML and MTA-STS policy.
"""
