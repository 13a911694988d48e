"""chatmail-metadata: IMAP METADATA dict service (device tokens, relay facts) and push notifier."""
