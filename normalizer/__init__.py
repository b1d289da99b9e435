"""Normalization steps that turn channel input into the unified model."""
