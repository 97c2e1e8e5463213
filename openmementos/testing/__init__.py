"""Loopback stand-ins for the Hugging Face Hub and OpenAI-compatible APIs, used by tests and benchmarks."""
