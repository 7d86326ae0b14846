"""The services' Prometheus endpoint, shared so a busy port is one line for every service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from levydrift.errors import ConfigError


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> bool:
    """Serve ``registry`` on http://host:port/metrics in a daemon thread; port 0 disables it.
    Returns whether a server was started; ``ConfigError`` when the port cannot be bound."""
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ConfigError(
            f"metrics port {host}:{port} cannot be used ({error.strerror or error}); set "
            "metrics.port (LEVYDRIFT_METRICS_PORT) to a free port, or 0 to disable metrics"
        ) from None
    return True
