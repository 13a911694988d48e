"""Housekeeping commands of a chatmail relay: chatmail-expire, chatmail-quota-expire,
chatmail-fsreport and the newemail CGI.

Decisions live in pure modules (`maildir`, `expireplan`, `report`, `credentials`); the file
system walk and the deletions live in `scan` and `fsops`; the command modules only wire them.
"""
