"""lastlogin: records the day of each IMAP login as the password file's mtime."""
