"""Web chat: a browser widget talking JSON frames over a WebSocket."""
