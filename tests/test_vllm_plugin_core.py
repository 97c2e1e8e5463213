"""The vLLM eviction plugin's pure parts and the serve command line (no vLLM needed)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.infer.vllm_plugin.core import (
    EVICT_ENV,
    MASK_DELIMITERS_ENV,
    RESOLVED_ARG,
    RequestEvictionState,
    ResolvedEviction,
    UnsupportedVLLM,
    check_vllm_version,
    closings,
    cut_at_closing,
    parse_flag,
    plan_eviction,
    requested_eviction,
)
from openmementos.infer.vllm_serve import CHATML_TEMPLATE, ServeSettings, serve_invocation
from openmementos.train.attention import DelimiterIds, memento_attention_mask

D = DelimiterIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
BS, BE, SS, SE, X, M, P = 1, 2, 3, 4, 9, 10, 50


@pytest.mark.parametrize("version", ["0.32.0", "0.32.7", "0.32.1+cpu"])
def test_the_supported_release_line_is_accepted(version):
    check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "1.0.0", "dev"])
def test_other_vllm_releases_are_refused_with_the_way_out(version):
    with pytest.raises(UnsupportedVLLM, match=r">=0\.32,<0\.33.*--vllm-mode restart"):
        check_vllm_version(version)


def test_a_request_flag_overrides_the_engine_default():
    assert requested_eviction({}, {}).evict is False
    assert requested_eviction({}, {EVICT_ENV: "1", MASK_DELIMITERS_ENV: "true"}) == requested_eviction(
        {"memento_evict": True, "memento_mask_delimiters": 1}, {}
    )
    assert requested_eviction({"memento_evict": "false"}, {EVICT_ENV: "1"}).evict is False
    assert [parse_flag(v, "x") for v in (True, 0, 1.0, "yes", "OFF", "")] == [True, False, True, True, False, False]
    with pytest.raises(ValueError, match="memento_evict must be true or false"):
        requested_eviction({"memento_evict": "maybe"}, {})


def test_resolved_settings_travel_in_extra_args():
    resolved = ResolvedEviction(D, mask_delimiters=True)
    assert ResolvedEviction.from_extra_args({RESOLVED_ARG: resolved.to_extra_args()}) == resolved
    assert ResolvedEviction.from_extra_args(None) is None
    assert ResolvedEviction.from_extra_args({"memento_evict": True}) is None


def test_closings_and_chunk_cuts_skip_the_prompt():
    tokens = [SE, P, P, BS, X, BE, SS, M, SE, BS, X]
    assert closings(tokens, 0, len(tokens), SE, response_start=3) == [8]
    # A recompute chunk ends at the closing; a chunk ending on it, a decode step or the prompt is not cut.
    assert cut_at_closing(tokens, 0, len(tokens), SE, response_start=3) == 9
    assert cut_at_closing(tokens, 4, 5, SE, response_start=3) == 5
    assert cut_at_closing(tokens, 8, 1, SE, response_start=3) == 1
    assert cut_at_closing(tokens, 0, 3, SE, response_start=3) == 3


def _response(blocks: list[tuple[int, int]], tail: int) -> list[int]:
    out = []
    for content, memento in blocks:
        out += [BS] + [X] * content + [BE, SS] + [M] * memento + [SE]
    return out + [X] * tail


def _decode_with_compactions(tokens: list[int], prompt: int, mask_delimiters: bool) -> list[list[int]]:
    """Replay a generation as the engine does: after each closing, compact a slot array of positions.

    Returns the logical positions held after each closing, checking the plan on the way.
    """
    held: list[int] = []
    after_each = []
    for position in range(len(tokens)):
        held.append(position)  # the step computes this token's KV
        if position < prompt or tokens[position] != SE:
            continue
        compaction = plan_eviction(
            tokens[: position + 1], position, D, mask_delimiters=mask_delimiters, response_start=prompt
        )
        if compaction is None:  # nothing to evict (an empty block, delimiters kept)
            after_each.append(list(held))
            continue
        assert compaction.kv_tokens_before == len(held)
        assert all(d < s for s, d in zip(compaction.moves_from, compaction.moves_to, strict=True))
        assert compaction.moves_from == sorted(compaction.moves_from)
        moved = [held[s] for s in compaction.moves_from]
        for d, value in zip(compaction.moves_to, moved, strict=True):
            held[d] = value
        del held[compaction.kv_tokens_after :]
        after_each.append(list(held))
    return after_each


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), min_size=1, max_size=4),
    prompt=st.integers(1, 5),
    tail=st.integers(1, 3),
    mask_delimiters=st.booleans(),
)
def test_compacted_slots_hold_exactly_what_the_training_mask_shows(blocks, prompt, tail, mask_delimiters):
    tokens = [P] * prompt + _response(blocks, tail)
    mask = memento_attention_mask(torch.tensor(tokens), D, mask_delimiters=mask_delimiters, response_start=prompt)[0, 0]
    closes = [i for i in range(prompt, len(tokens)) if tokens[i] == SE]
    after_each = _decode_with_compactions(tokens, prompt, mask_delimiters)
    assert len(after_each) == len(closes)
    for closing, held in zip(closes, after_each, strict=True):
        visible = mask[closing + 1, : closing + 1].nonzero().squeeze(-1).tolist()
        assert held == visible  # the next query sees exactly the slots the engine keeps


def test_delimiters_stay_unless_masked_and_malformed_closings_keep_everything():
    tokens = [P, P, BS, X, X, BE, SS, M, SE]
    kept = plan_eviction(tokens, 8, D, mask_delimiters=False, response_start=2)
    masked = plan_eviction(tokens, 8, D, mask_delimiters=True, response_start=2)
    assert (kept.kv_tokens_before, kept.kv_tokens_after, kept.moves_from, kept.moves_to) == (
        9,
        7,
        [5, 6, 7, 8],
        [3, 4, 5, 6],
    )
    assert (masked.kv_tokens_after, masked.moves_from, masked.moves_to) == (5, [6, 7, 8], [2, 3, 4])
    assert plan_eviction([P, SS, M, SE], 3, D, mask_delimiters=False, response_start=1) is None


def test_request_state_reports_the_peak_and_restarts_after_a_preemption():
    state = RequestEvictionState(ResolvedEviction(D, False), response_start=2)
    compaction = plan_eviction([P, P, BS, X, X, BE, SS, M, SE], 8, D, mask_delimiters=False, response_start=2)
    state.applied(compaction, blocks_held=1)
    assert (state.offset, state.kv_tokens(12), state.peak_kv_tokens) == (2, 10, 9)
    report = state.report(num_computed_tokens=20, block_size=16)
    assert report["blocks_evicted"] == 1 and report["peak_kv_tokens"] == 18
    assert report["kv_tokens_after_eviction"] == [7] and report["kv_blocks_after_eviction"] == [1]
    state.preempted(num_computed_tokens=25)
    assert (state.offset, state.scanned, state.blocks_evicted, state.peak_kv_tokens) == (0, 0, 0, 23)
    assert state.report(10, 16)["preemptions"] == 1


def test_serve_starts_vllms_server_with_eviction_on_and_training_chatml(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    argv, env = serve_invocation(
        ServeSettings(str(tmp_path), port=8123, mask_delimiters=True, vllm_args=("--max-model-len", "512")),
        python="py",
        environ={"PATH": "/bin"},
    )
    assert argv[:5] == ["py", "-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path)]
    assert argv[-2:] == ["--max-model-len", "512"]
    assert {"--no-async-scheduling", "--enforce-eager", "8123", CHATML_TEMPLATE} <= set(argv)
    assert env == {"PATH": "/bin", EVICT_ENV: "1", MASK_DELIMITERS_ENV: "1", "VLLM_USE_V2_MODEL_RUNNER": "0"}
    # The template renders one user turn as ChatML, the format training gives a tokenizer without one.
    jinja2 = pytest.importorskip("jinja2")
    rendered = jinja2.Template(CHATML_TEMPLATE).render(
        messages=[{"role": "user", "content": "Find x."}], add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nFind x.<|im_end|>\n<|im_start|>assistant\n"


def test_serve_keeps_a_checkpoints_own_template_and_the_users_engine_flags(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    argv, env = serve_invocation(
        ServeSettings(str(tmp_path), evict=False, vllm_args=("--no-enforce-eager",)), environ={}, cuda=False
    )
    assert "--chat-template" not in argv and argv.count("--no-enforce-eager") == 1 and "--enforce-eager" not in argv
    assert env[EVICT_ENV] == "0"
    argv, _ = serve_invocation(ServeSettings("org/model"), environ={}, cuda=True)
    assert "--enforce-eager" not in argv and "--chat-template" not in argv
    for clash in (("--port", "1"), ("--model=x",), ("--async-scheduling",)):
        with pytest.raises(ValueError, match="cannot be passed to vLLM here"):
            serve_invocation(ServeSettings("m", vllm_args=clash), environ={})


def test_serve_and_generate_explain_themselves_and_fail_cleanly_without_vllm(tmp_path):
    runner = CliRunner()
    serve_help = runner.invoke(app, ["serve", "--help"]).output
    assert "memento_evict" in serve_help and "kv_transfer_params" in serve_help
    assert "--vllm-mode" in runner.invoke(app, ["generate", "--help"]).output
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    result = runner.invoke(app, ["serve", "--model", str(tmp_path), "--", "--max-model-len", "64"])
    assert result.exit_code == 1 and "needs vLLM" in result.output
