"""The Flow's gateway: gRPC for Jina's clients, HTTP for the OpenAI-compatible API (Jina imports)."""
