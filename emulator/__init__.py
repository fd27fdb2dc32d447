"""A local QuickBooks Online: OAuth, Accounting API v3 and webhooks, faithful to Intuit's behaviour."""
