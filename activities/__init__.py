"""Temporal activities: QuickBooks calls, database reads and writes, outbound events."""
