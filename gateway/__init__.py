"""The aiohttp server: intake, outbound replies, the REST API and the command line."""
