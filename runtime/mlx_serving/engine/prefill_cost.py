"""What a prefill chunk costs, as a function of its length and of the context it attends
to: the step budget's model of the time a chunk will take.

A chunk of n tokens after c cached ones costs about n * (a + b * (c + n / 2)): a for the
projections and MLP of each token, b for attending to each earlier token. A rate measured
on early chunks (small c) makes late chunks look cheap: on this project's CPU test model
a chunk sized for 45 ms near the end of a 1,500-token prompt took 70-90 ms, and the
decoding streams beside it waited that long. a and b are fit by least squares over the
recent chunks (older ones fade), and the next chunk is sized by solving the model for the
time there is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Each new chunk's weight against those before it: about the last 10 chunks count.
FORGET = 0.9
# Below this determinant the two features have not varied enough to tell a from b.
MIN_DETERMINANT = 1e-12


@dataclass
class PrefillCost:
    # Decayed sums of x x^T and x t over chunks, x = (n, attended), t = seconds, where
    # attended = n * (c + n / 2) summed over the prompts a step fed.
    _nn: float = 0.0
    _na: float = 0.0
    _aa: float = 0.0
    _nt: float = 0.0
    _at: float = 0.0

    def record(self, tokens: int, attended: float, seconds: float) -> None:
        self._nn = FORGET * self._nn + tokens * tokens
        self._na = FORGET * self._na + tokens * attended
        self._aa = FORGET * self._aa + attended * attended
        self._nt = FORGET * self._nt + tokens * seconds
        self._at = FORGET * self._at + attended * seconds

    def coefficients(self) -> tuple[float, float] | None:
        """(a, b) in seconds, or None before the fit can tell them apart or when it finds
        attention free or negative (noise): the caller's plain rate serves then."""
        if self._nn <= 0 or self._aa <= 0:
            return None
        det = self._nn * self._aa - self._na * self._na
        # Against the product of the diagonal, so the test does not depend on the units.
        if det <= MIN_DETERMINANT * self._nn * self._aa:
            return None
        a = (self._nt * self._aa - self._at * self._na) / det
        b = (self._at * self._nn - self._nt * self._na) / det
        if a <= 0 or b <= 0:
            return None
        return a, b

    def tokens_within(self, seconds: float, context: int) -> int | None:
        """The longest chunk after `context` cached tokens that fits `seconds`, or None
        without a fit: b/2 n^2 + (a + b c) n = seconds, for n."""
        fit = self.coefficients()
        if fit is None:
            return None
        a, b = fit
        linear = a + b * context
        return int((-linear + math.sqrt(linear * linear + 2 * b * seconds)) / b)
