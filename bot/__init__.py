"""The FAQ bot: matches customer questions against a knowledge base and decides answer, suggest or hand off."""
