"""The model, config and store shared by every part of Huiliu."""
