"""`openmementos serve`: vLLM's OpenAI-compatible server for a memento model, evicting finished blocks."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="A memento model folder (the stage-2 output) or Hub id.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    no_evict: Annotated[
        bool, typer.Option("--no-evict", help="Keep every block unless a request asks for eviction.")
    ] = False,
    mask_delimiters: Annotated[
        bool | None,
        typer.Option(help="Evict block delimiters too; default: what the model was trained with in stage 2."),
    ] = None,
) -> None:
    """Serve a memento model with vLLM; every request's finished blocks leave the KV cache.

    Starts vLLM's OpenAI-compatible server (/v1/completions, /v1/chat/completions, /metrics) with the
    openmementos plugin evicting a block's KV right after its memento's <|summary_end|>, exactly as in
    stage-2 training and `generate --backend hf`. A request can opt out with
    "vllm_xargs": {"memento_evict": false}; each response's kv_transfer_params.openmementos reports the
    blocks evicted and the peak KV tokens. Arguments after `--` go to vLLM as they are.

    Example: openmementos serve --model ckpt/stage2 --port 8000 -- --max-model-len 32768
    """
    from openmementos.infer.vllm_serve import ServeSettings
    from openmementos.infer.vllm_serve import serve as start
    from openmementos.train.record import trained_mask_delimiters

    if mask_delimiters is None:
        mask_delimiters = trained_mask_delimiters(model)
    settings = ServeSettings(model, host, port, not no_evict, mask_delimiters, tuple(ctx.args))
    try:
        start(settings)
    except ValueError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
