"""What operators watch: the engine's Prometheus metrics and OpenTelemetry tracing (logs: logging_setup.py)."""
