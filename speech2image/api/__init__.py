"""The front door's rules, without a server: API keys (`keys`), the OpenAI-compatible mapping
between HTTP forms or JSON and the Flow's documents and options (`openai`), and the bounded
store the image URLs are served from (`images`). The gateway wires them to Jina."""
