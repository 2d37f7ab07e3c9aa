"""The admin interface: the switch's own HTTP listener (health, readiness, Prometheus
metrics, the status document, reload) and what the operator's console reads."""
