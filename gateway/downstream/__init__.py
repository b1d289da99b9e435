"""Downstream delivery to helpdesks: signed webhooks from the events outbox."""
