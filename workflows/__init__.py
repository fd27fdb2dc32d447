"""Temporal workflows: one per invoice, one per QuickBooks connection."""
