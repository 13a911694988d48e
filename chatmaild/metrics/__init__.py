"""Prometheus metrics of the chatmaild daemons, the log-derived relay counters and the
textfile collector. See docs/metrics.md."""
