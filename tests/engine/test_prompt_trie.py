"""The prompt trie's linear search answers as mlx-lm's own, and the prompt cache uses it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mlx_lm.models.cache import PromptTrie

from mlx_serving.engine.prompt_cache import PromptCache
from mlx_serving.engine.prompt_trie import LinearPromptTrie

# A small alphabet, so that stored sequences share prefixes and the query meets them.
sequences = st.lists(st.integers(0, 3), max_size=12)


@given(stored=st.lists(sequences, max_size=8), query=sequences)
def test_the_same_result_as_mlx_lm(stored: list[list[int]], query: list[int]) -> None:
    theirs, ours = PromptTrie(), LinearPromptTrie()
    for index, tokens in enumerate(stored):
        theirs.add("m", tokens, index)
        ours.add("m", tokens, index)
    assert ours.search("m", query) == theirs.search("m", query)
    assert ours.search("other", query) == theirs.search("other", query)


def test_a_long_stored_answer_is_found_by_its_prompt() -> None:
    trie = LinearPromptTrie()
    answer = [1, 2, *range(10, 4010)]
    trie.add("m", answer, "entry")
    found = trie.search("m", [1, 2, 3])
    assert (found.longer, found.common_prefix, found.shorter) == (answer, 2, None)


def test_the_prompt_cache_searches_with_it() -> None:
    cache = PromptCache(max_bytes=1 << 20)
    assert isinstance(cache._lru._trie, LinearPromptTrie)
