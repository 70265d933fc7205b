"""Registry backends, one module per technology."""
