"""The certificate registry: client certificates registered per API in a database, live on every node.

- `RegistryStore`: the table in SQLite (one host) or PostgreSQL (several), migrations, the change marker.
- `RegistryFeed` / `feed_for`: what the truststore reloader polls (cheaply) and joins to the configuration's.
- `Registry`: add, list, update, remove, checked against the configuration (``asgi-apim certs``, the admin API).
- `admin.mount`: the optional admin API around a stack.
- `expiry_summary`: (count, days to the nearest expiry) of registrations, for metrics.
"""

from asgi_apim.registry.feed import RegistryFeed, expiry_summary, feed_for, log_expiring
from asgi_apim.registry.operations import Registry, read_certificate
from asgi_apim.registry.store import RegistryStore, StoredCertificate

__all__ = [
    "Registry",
    "RegistryFeed",
    "RegistryStore",
    "StoredCertificate",
    "expiry_summary",
    "feed_for",
    "log_expiring",
    "read_certificate",
]
