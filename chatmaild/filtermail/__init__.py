"""filtermail: the before-queue SMTP content filters of a chatmail relay."""
