"""Operator rules at intake: field extraction, routing, SLA policy and business time; pure functions."""
