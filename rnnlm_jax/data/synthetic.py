"""Synthetic tasks that separate recurrences by what they can compute: state tracking
(Deletang et al. 2023's regular tasks, the S3 and S5 word problems of Merrill et al. 2024)
and recall (multi-query associative recall, MQAR, as Zoology defines it, Arora et al. 2023).

Every task draws batches of int token sequences with NumPy from a `np.random.Generator`:
`Batch(inputs [B, T], targets [B, T], weights [B, T], seq_lengths [B])`. A position is
scored where its weight is 1; a scored position t stands for the prefix of length t + 1,
so one evaluation reports accuracy by length for per-position and final-position tasks
alike. Sequences are right-padded with the task's `pad` token past `seq_lengths`.

  parity              bits 0/1; the target at the last position: their sum mod 2
  modular_arithmetic  numbers 0..m-1 and + - * alternating (odd length, no brackets); the
                      target at the last position: the expression mod m, * before + and -
  cycle_navigation    moves 0 (stay), 1 (+1), 2 (-1) on a cycle of 5 from position 0; the
                      target at the last position: where they end
  s3, s5              each token one permutation of the group (itertools' order); the target
                      at every position: the composition of the prefix, g_t o ... o g_1
                      (g_1 applied first)
  mqar                Zoology's: num_kv_pairs key-value pairs (keys from [1, V/2), values
                      from [V/2, V), each drawn without replacement), then each key once more
                      as a query at a power-law distributed gap; the target at a query: its
                      value; every other position is a random token and unscored

Chance is 1 / num_classes for every task, so scaled accuracy (acc - chance) / (1 - chance)
is 0 at chance and 1 when perfect (the xLSTM paper's measure).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import numpy as np

STATE_TASKS = ("parity", "modular_arithmetic", "cycle_navigation", "s3", "s5")
TASKS = (*STATE_TASKS, "mqar")
CYCLE = 5  # cycle_navigation's cycle length (Deletang et al.'s)
PLUS, MINUS, TIMES = 0, 1, 2  # modular arithmetic's operators, after the m numbers


class Batch(NamedTuple):
    """A batch of a task: int32 `inputs`, `targets [B, T]`, float32 `weights [B, T]` (1 where
    a target is scored), int32 `seq_lengths [B]`."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    seq_lengths: np.ndarray


def permutations(n: int) -> np.ndarray:
    """The elements of S_n, `[n!, n]`, in itertools' (lexicographic) order."""
    return np.array(list(itertools.permutations(range(n))), np.int32)


def composition_table(n: int) -> np.ndarray:
    """`table[a, b]`: the index of the permutation `a o b` (b applied first): `(a o b)(i) =
    a(b(i))`, `[n!, n!]`."""
    perms = permutations(n)
    index = {tuple(p): i for i, p in enumerate(perms)}
    table = np.empty((len(perms), len(perms)), np.int32)
    for a, pa in enumerate(perms):
        for b, pb in enumerate(perms):
            table[a, b] = index[tuple(pa[pb])]
    return table


def evaluate_modular(expression: np.ndarray, modulus: int) -> int:
    """The value mod `modulus` of one expression `[n0, op, n1, op, ...]` (ops encoded as
    `modulus + PLUS | MINUS | TIMES`), multiplication before addition and subtraction."""
    total, sign, term = 0, 1, int(expression[0])
    for i in range(1, len(expression), 2):
        op, number = int(expression[i]) - modulus, int(expression[i + 1])
        if op == TIMES:
            term *= number
        else:
            total += sign * term
            sign, term = (1 if op == PLUS else -1), number
    return (total + sign * term) % modulus


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its tokens, its classes and how to draw a batch.

    Attributes:
      name: one of `TASKS`.
      modulus: modular_arithmetic's m.
      vocab_size: mqar's V (keys and values; every other task sets its own).
      num_kv_pairs: mqar's key-value pairs.
      power_a: mqar's power law of the query gaps (Zoology's 0.01; 1 is uniform).
    """

    name: str
    modulus: int = 5
    vocab_size: int = 512
    num_kv_pairs: int = 16
    power_a: float = 0.01

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; expected one of {TASKS}")
        if self.name == "modular_arithmetic" and self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, not {self.modulus}")
        if self.name == "mqar":
            if self.num_kv_pairs < 1:
                raise ValueError(f"num_kv_pairs must be >= 1, not {self.num_kv_pairs}")
            keys = self.vocab_size // 2 - 1
            if keys < self.num_kv_pairs:
                raise ValueError(
                    f"mqar_vocab_size={self.vocab_size} holds {max(keys, 0)} keys (token 1 to "
                    f"V/2 - 1), fewer than num_kv_pairs={self.num_kv_pairs}: raise it to at "
                    f"least {2 * (self.num_kv_pairs + 1)}"
                )
            if not 0 < self.power_a <= 1:
                raise ValueError(f"power_a must be in (0, 1], not {self.power_a}")

    @property
    def per_position(self) -> bool:
        """Whether every position has a target (s3, s5) rather than only the last."""
        return self.name in ("s3", "s5")

    @property
    def input_tokens(self) -> int:
        """Tokens an input may hold, the pad token included."""
        return {
            "parity": 3,
            "modular_arithmetic": self.modulus + 4,
            "cycle_navigation": 4,
            "s3": 7,
            "s5": 121,
            "mqar": self.vocab_size,
        }[self.name]

    @property
    def num_classes(self) -> int:
        """The classes a target is one of."""
        return {
            "parity": 2,
            "modular_arithmetic": self.modulus,
            "cycle_navigation": CYCLE,
            "s3": 6,
            "s5": 120,
            "mqar": self.vocab_size,
        }[self.name]

    @property
    def model_vocab(self) -> int:
        """The model's vocabulary: wide enough for the inputs and the classes."""
        return max(self.input_tokens, self.num_classes)

    @property
    def pad(self) -> int:
        """The token past a sequence's end (mqar has none: every sequence is whole)."""
        return self.input_tokens - 1 if self.name != "mqar" else 0

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def min_length(self) -> int:
        """The shortest sequence the task has (mqar: room for the pairs and their queries)."""
        return {"modular_arithmetic": 3, "mqar": 4 * self.num_kv_pairs}.get(self.name, 1)

    def sample(self, rng: np.random.Generator, lengths: np.ndarray, width: int) -> Batch:
        """A batch of `len(lengths)` sequences of the given lengths, padded to `width`."""
        lengths = np.asarray(lengths, np.int64)
        if lengths.min() < self.min_length() or lengths.max() > width:
            raise ValueError(f"{self.name}: lengths must be in [{self.min_length()}, {width}]")
        if self.name == "mqar":
            return self._mqar(rng, len(lengths), width)
        if self.name == "modular_arithmetic":  # odd lengths only, as Deletang et al.'s
            lengths = lengths - (lengths % 2 == 0)
        B = len(lengths)
        valid = np.arange(width)[None, :] < lengths[:, None]
        targets = np.zeros((B, width), np.int64)
        if self.name in ("s3", "s5"):
            n = 3 if self.name == "s3" else 5
            table = _table(n)
            inputs = rng.integers(0, len(table), (B, width))
            state = np.zeros(B, np.int64)  # the identity is permutation 0
            for t in range(width):
                state = table[inputs[:, t], state]
                targets[:, t] = state
            weights = valid
        else:
            inputs, answers = self._final(rng, B, width, lengths)
            targets[np.arange(B), lengths - 1] = answers
            weights = np.zeros((B, width), bool)
            weights[np.arange(B), lengths - 1] = True
        inputs = np.where(valid, inputs, self.pad)
        targets = np.where(weights, targets, 0)
        return Batch(inputs.astype(np.int32), targets.astype(np.int32),
                     weights.astype(np.float32), lengths.astype(np.int32))  # fmt: skip

    def _final(self, rng, B: int, width: int, lengths):
        """`(inputs [B, width], answer [B])` of a final-position task (padding not yet
        applied)."""
        valid = np.arange(width)[None, :] < lengths[:, None]
        if self.name == "parity":
            inputs = rng.integers(0, 2, (B, width))
            return inputs, (inputs * valid).sum(axis=1) % 2
        if self.name == "cycle_navigation":
            inputs = rng.integers(0, 3, (B, width))
            moves = np.array([0, 1, -1])[inputs] * valid
            return inputs, moves.sum(axis=1) % CYCLE
        m = self.modulus
        inputs = rng.integers(0, m, (B, width))
        ops = m + rng.integers(0, 3, (B, width))
        inputs[:, 1::2] = ops[:, 1::2]
        answers = np.array([evaluate_modular(inputs[b, : lengths[b]], m) for b in range(B)])
        return inputs, answers

    def _mqar(self, rng, B: int, T: int) -> Batch:
        """Zoology's multi-query associative recall at length T (module docstring)."""
        P, V = self.num_kv_pairs, self.vocab_size
        context = 2 * P
        space = (T - context) // 2
        p = self.power_a * np.arange(1, space + 1) ** (self.power_a - 1)
        p = p / p.sum()
        keys = np.stack([rng.choice(np.arange(1, V // 2), P, replace=False) for _ in range(B)])
        values = np.stack([rng.choice(np.arange(V // 2, V), P, replace=False) for _ in range(B)])
        gaps = np.stack([rng.choice(space, P, replace=False, p=p) for _ in range(B)])
        inputs = np.zeros((B, T), np.int64)
        inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
        rows = np.arange(B)[:, None]
        query = context + 2 * gaps  # where each key is asked again
        inputs[rows, query] = keys
        targets = np.zeros((B, T), np.int64)
        weights = np.zeros((B, T), bool)
        targets[rows, query], weights[rows, query] = values, True
        noise = rng.integers(0, V, (B, T))
        inputs = np.where(inputs == 0, noise, inputs)  # Zoology's random_non_queries
        return Batch(inputs.astype(np.int32), targets.astype(np.int32),
                     weights.astype(np.float32), np.full(B, T, np.int32))  # fmt: skip


_TABLES: dict[int, np.ndarray] = {}


def _table(n: int) -> np.ndarray:
    if n not in _TABLES:
        _TABLES[n] = composition_table(n).astype(np.int64)
    return _TABLES[n]


def sample_lengths(rng: np.random.Generator, count: int, low: int, high: int) -> np.ndarray:
    """`count` lengths drawn uniformly from [low, high]."""
    return rng.integers(low, high + 1, count)


def scaled_accuracy(accuracy: float, chance: float) -> float:
    """`(accuracy - chance) / (1 - chance)`: 0 at chance, 1 when perfect."""
    return (accuracy - chance) / (1.0 - chance)
