"""The API gateway: declared routes proxied to upstream instances with policies and auth."""
