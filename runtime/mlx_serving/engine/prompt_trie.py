"""mlx-lm's prompt trie, with a lookup linear in the nodes it visits.

`PromptTrie.search` finds the shortest stored sequence that extends the prompt by copying
the path walked so far at every node: quadratic in a stored sequence's length. A prompt
that prefixes one stored 3,000-token answer (the same question asked again) took 22 ms on
the engine thread, every running stream waiting (this CPU). This search visits the same
nodes in the same order and returns the same result; the path is kept as links and built
once, for the answer.
"""

from __future__ import annotations

from typing import Any

from mlx_lm.models.cache import LRUPromptCache, PromptTrie, PromptTrieResult

_VALUE = "__value__"  # where mlx-lm's trie keeps a node's entry
_Path = tuple[int, "_Path"] | None  # the last token and the path before it


class LinearPromptTrie(PromptTrie):  # type: ignore[misc]  # mlx-lm has no type hints
    def search(self, model: Any, tokens: list[int]) -> PromptTrieResult:
        if model not in self._trie:
            return PromptTrieResult(model, None, None, None, 0)
        current = self._trie[model]
        if not tokens and _VALUE in current:
            return PromptTrieResult(model, [], None, None, 0)
        last_index = -1
        index = 0
        while index < len(tokens) and tokens[index] in current:
            current = current[tokens[index]]
            if _VALUE in current:
                last_index = index
            index += 1
        if last_index == len(tokens) - 1 >= 0:
            return PromptTrieResult(model, tokens, None, None, 0)
        shorter = tokens[: last_index + 1] if last_index > 0 else None
        longer = None
        if index > 0:
            longer = tokens[:index] + _shortest_extension(current)
        return PromptTrieResult(model, None, shorter, longer, index)


def _shortest_extension(start: dict[Any, Any]) -> list[int]:
    """The tokens from `start` to the nearest node with an entry, found as mlx-lm's
    depth-first search finds it (the same order, ties going to the first found)."""
    best: _Path = None
    best_depth = -1
    stack: list[tuple[dict[Any, Any], _Path, int]] = [(start, None, 0)]
    while stack:
        node, path, depth = stack.pop()
        if _VALUE in node:
            if best_depth < 0 or depth < best_depth:
                best, best_depth = path, depth
        elif best_depth < 0 or depth < best_depth:
            for token in node:
                stack.append((node[token], (token, path), depth + 1))
    extension: list[int] = []
    while best is not None:
        token, best = best
        extension.append(token)
    extension.reverse()
    return extension


def lru_prompt_cache(max_size: int, max_bytes: int) -> LRUPromptCache:
    """mlx-lm's LRU prompt cache searching with the linear trie."""
    lru = LRUPromptCache(max_size=max_size, max_bytes=max_bytes)
    lru._trie = LinearPromptTrie()  # the one place it keeps its trie, and empty yet
    return lru
