"""`openmementos serve`: vLLM's OpenAI-compatible server with block eviction on for every request.

The server is vLLM's own (`python -m vllm.entrypoints.openai.api_server`); the openmementos plugin,
which vLLM loads by itself, does the eviction. This module only builds the command line and the
environment: eviction as the default for requests (a client can still send `"vllm_xargs":
{"memento_evict": false}`), the checkpoint's `mask_delimiters`, the V1 model runner, synchronous
scheduling, eager mode on CPU, and the ChatML template of training when the checkpoint has none.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openmementos.chat import CHATML_TEMPLATE
from openmementos.infer.vllm_plugin.core import EVICT_ENV, MASK_DELIMITERS_ENV

_RESERVED = {
    "--model": "give the checkpoint with --model",
    "--host": "use --host",
    "--port": "use --port",
    "--async-scheduling": "block eviction needs synchronous scheduling",
}


@dataclass(frozen=True)
class ServeSettings:
    """What `openmementos serve` starts. `vllm_args` are passed to vLLM's server as they are."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    evict: bool = True
    mask_delimiters: bool = False
    vllm_args: Sequence[str] = field(default_factory=tuple)


def serve_invocation(
    settings: ServeSettings,
    *,
    python: str = sys.executable,
    environ: Mapping[str, str] = os.environ,
    cuda: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start vLLM's server for `settings` (ValueError on conflicting args)."""
    extra = list(settings.vllm_args)
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in _RESERVED:
            raise ValueError(f"{name} cannot be passed to vLLM here: {_RESERVED[name]}")
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", settings.model]
    argv += ["--host", settings.host, "--port", str(settings.port), "--no-async-scheduling"]
    if not cuda and not any(a.split("=", 1)[0] in ("--enforce-eager", "--no-enforce-eager") for a in extra):
        argv.append("--enforce-eager")  # CUDA graphs do not exist on CPU; eager starts in seconds
    if not any(a.split("=", 1)[0] == "--chat-template" for a in extra) and has_chat_template(settings.model) is False:
        argv += ["--chat-template", CHATML_TEMPLATE]
    env = dict(environ)
    env[EVICT_ENV] = "1" if settings.evict else "0"
    env[MASK_DELIMITERS_ENV] = "1" if settings.mask_delimiters else "0"
    env.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    return argv + extra, env


def has_chat_template(model: str) -> bool | None:
    """Whether a local checkpoint's tokenizer has a chat template (None for a Hub id: vLLM will know)."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def serve(settings: ServeSettings) -> None:
    """Replace this process by vLLM's server (never returns); ValueError if vLLM cannot evict here."""
    import torch

    from openmementos.infer.vllm_backend import require_plugin

    require_plugin()
    argv, env = serve_invocation(settings, cuda=torch.cuda.is_available())
    os.execve(argv[0], argv, env)
