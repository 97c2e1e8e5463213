"""Test and benchmark support, outside the wheel: loopback stand-ins for the Hugging Face Hub
(`hub_standin`) and OpenAI-compatible APIs (`openai_standin`), a random-init tiny model with an
offline-trained tokenizer (`tiny_model`), generated OpenThoughts3-shaped rows (`ot3_rows`), stage-folder
builders (`trace_builders`, `annotated_traces`), the scripted annotate LLM (`annotate_script`) and the
engine tests' helpers (`llm_helpers`).

Tests import it as `support` (pytest puts `tests/` on the path); benchmarks import `support_path` first.
"""
