"""The files of a production chatmail relay, rendered from chatmail.ini (pure functions;
dkimkey makes the DKIM key once, dnscheck looks records up). The playbook runs them through
`python -m chatmaild.relay render`, and the local relays of chatmaild.relay use the same
rendering with their own paths."""
