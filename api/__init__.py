"""The FastAPI layer: platform routes, the OAuth callback, the Intuit webhook, operations."""
