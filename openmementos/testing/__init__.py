"""Test and benchmark support that ships with the package: loopback stand-ins for the Hugging Face Hub and
OpenAI-compatible APIs, a random-init tiny model with an offline-trained tokenizer, and generated
OpenThoughts3-shaped rows (`ot3_rows`)."""
