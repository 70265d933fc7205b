"""The HTTP API: problem+json errors, health endpoints and the ``/api/v1`` routers."""
