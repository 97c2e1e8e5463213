"""The vLLM restart variant's bookkeeping, driven by scripted engine rounds (no vLLM needed)."""

from openmementos.infer.vllm_backend import RestartRequest
from openmementos.train.attention import DelimiterIds

D = DelimiterIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
BS, BE, SS, SE, NL, X, M, END, P = 1, 2, 3, 4, 8, 9, 10, 99, 50


class JoinTokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))


def absorb(request, tokens, cached, stopped_on=None, max_new_tokens=100):
    request.absorb(
        tokens, cached_tokens=cached, stopped_on=stopped_on, delimiters=D, stop_ids={END}, max_new_tokens=max_new_tokens
    )


def test_each_memento_restarts_the_request_without_its_block():
    request = RestartRequest("q", [P] * 5, evict=True)
    absorb(request, [BS, X, X, X, BE, NL, SS, M, M, SE], cached=0, stopped_on=SE)
    assert request.finish_reason is None and request.blocks_evicted == 1
    assert request.context == [P] * 5 + [BS, BE, NL, SS, M, M, SE]
    assert request.peak_kv_tokens == 5 + 10 - 1  # the stop token's KV is not computed in that round

    # The engine reuses the prefix up to <|block_start|>; the rest but the new SE is recomputed.
    absorb(request, [NL, BS, X, X, BE, NL, SS, M, SE], cached=6, stopped_on=SE)
    assert request.recomputed_tokens == len([BE, NL, SS, M, M])
    assert request.context == [P] * 5 + [BS, BE, NL, SS, M, M, SE, NL, BS, BE, NL, SS, M, SE]
    assert request.peak_kv_tokens == 12 + 9 - 1

    absorb(request, [NL, M, M, END], cached=16)
    result = request.result(JoinTokenizer())
    assert (result.finish_reason, result.blocks_evicted, result.backend) == ("stop", 2, "vllm-restart")
    assert result.tokens_generated == 10 + 9 + 4
    assert result.peak_kv_tokens_without_eviction == 5 + 23 - 1
    assert result.peak_kv_tokens == 19 + 4 - 1  # last round: 19-token context + 4 new - 1
    assert result.text.endswith(f"{M} {M}")  # the end-of-turn token is not part of the text
    assert result.recomputed_tokens == 5 + (19 - 16 - 1)


def test_mask_delimiters_drops_the_block_delimiters_too():
    request = RestartRequest("q", [P] * 2, evict=True, mask_delimiters=True)
    absorb(request, [BS, X, BE, NL, SS, M, SE], cached=0, stopped_on=SE)
    assert request.context == [P, P, NL, SS, M, SE]


def test_stop_token_missing_from_the_output_is_restored_and_budget_ends_the_request():
    request = RestartRequest("q", [P], evict=True)
    absorb(request, [BS, X, BE, SS, M], cached=0, stopped_on=SE, max_new_tokens=6)
    assert request.generated[-1] == SE and request.finish_reason == "length"
    assert request.blocks_evicted == 0  # no eviction once the budget is spent


def test_without_eviction_it_is_one_ordinary_request():
    request = RestartRequest("q", [P] * 3, evict=False)
    absorb(request, [BS, X, BE, SS, M, SE, NL, END], cached=0)
    result = request.result(JoinTokenizer())
    assert (result.finish_reason, result.blocks_evicted, result.backend) == ("stop", 0, "vllm")
    assert result.peak_kv_tokens == result.peak_kv_tokens_without_eviction == 3 + 8 - 1
