"""The engine's QuickBooks Online client: API, OAuth, webhooks, rate limits."""
