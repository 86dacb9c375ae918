"""Sets of papers as rows of bits, many rows at a time, in NumPy: the arithmetic under rule evaluation.

A *matrix* holds one row per set; bit ``p`` of a row (word ``p // 64``, bit ``p % 64``) is paper ``p`` of a
*block*, a run of consecutive papers of the batch. Blocks keep the matrix within a memory budget however many
papers a batch has; their results are merged back in order. A *posting* result is compressed sparse rows: the
papers of row ``r`` are ``papers[offsets[r]:offsets[r + 1]]``, ascending.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Words: TypeAlias = npt.NDArray[np.uint64]
Ints: TypeAlias = npt.NDArray[np.int64]

BITS = 64
_ONE = np.uint64(1)


class Op(IntEnum):
    """The operations of the rule graph (:mod:`notifier.matching.rules`) and of its :class:`Step`: what row ``r``
    becomes from rows ``left`` and ``right``, as bits (a bit is one paper)."""

    AND = 1  # left & right
    OR = 2  # left | right
    AND_NOT = 3  # left & ~right
    NOT = 4  # ~left, within the block's papers (right unused)


@dataclass(frozen=True, slots=True)
class Block:
    """Papers ``start .. start + size - 1``, held in ``words`` 64-bit words a row."""

    start: int
    size: int
    words: int

    def everything(self) -> Words:
        """The row with every paper of the block."""
        row = np.zeros(self.words, dtype=np.uint64)
        full, rest = divmod(self.size, BITS)
        row[:full] = np.uint64(2**64 - 1)
        if rest:
            row[full] = np.uint64(2**rest - 1)
        return row


@dataclass(frozen=True, slots=True)
class Step:
    """Rows ``first .. end - 1`` are ``op`` of rows ``left`` and ``right`` (``right`` unused by NOT)."""

    op: Op
    first: int
    end: int
    left: Ints
    right: Ints


def evaluate(
    rows: int, steps: list[Step], outputs: Ints, bits: tuple[Ints, Ints], papers: int, budget: int, workers: int
) -> tuple[Ints, Ints]:
    """Postings of the ``outputs`` rows after running ``steps`` on a matrix of ``rows`` rows whose (row, paper)
    ``bits`` are set first, over ``papers`` papers in blocks within ``budget`` bytes, on up to ``workers``
    threads at once (NumPy lets go of the interpreter lock in these loops)."""
    workers = max(1, min(workers, -(-papers // BITS)))
    per_word = Evaluator.bytes_per_word(rows, steps, len(outputs)) * workers
    words = max(1, min(-(-papers // (BITS * workers)), budget // max(per_word, 1)))
    blocks = [Block(start, min(words * BITS, papers - start), words) for start in range(0, papers, words * BITS)]
    shares = [blocks[i::workers] for i in range(min(workers, len(blocks)))]

    def run(share: list[Block]) -> list[tuple[Ints, Ints]]:
        evaluator = Evaluator(rows, steps, outputs, words)
        return [evaluator.run(*bits, block) for block in share]

    if len(shares) == 1:
        return merge(run(shares[0]))
    with ThreadPoolExecutor(len(shares), thread_name_prefix="match") as pool:
        done = list(pool.map(run, shares))
    return merge([done[i % len(shares)][i // len(shares)] for i in range(len(blocks))])


class Evaluator:
    """Runs :class:`Step` lists over blocks, reusing one matrix and its scratch rows from block to block."""

    def __init__(self, rows: int, steps: list[Step], outputs: Ints, words: int) -> None:
        self.steps = steps
        self.outputs = outputs
        self.matrix = np.zeros((rows, words), dtype=np.uint64)
        widest = max((step.end - step.first for step in steps), default=0)
        self._left = np.empty((widest, words), dtype=np.uint64)
        self._right = np.empty((widest, words), dtype=np.uint64)
        self._out = np.empty((len(outputs), words), dtype=np.uint64)

    @staticmethod
    def bytes_per_word(rows: int, steps: list[Step], outputs: int) -> int:
        """Memory that one word of width costs: the matrix, two scratch copies of the widest step, the outputs."""
        return 8 * (rows + 2 * max((step.end - step.first for step in steps), default=0) + outputs)

    def run(self, rows: Ints, papers: Ints, block: Block) -> tuple[Ints, Ints]:
        """Set the given (row, paper) bits, run the steps, and return the postings of the output rows."""
        matrix = self.matrix
        matrix.fill(0)
        set_bits(matrix, rows, papers, block)
        everything = block.everything()
        for step in self.steps:
            count = step.end - step.first
            left = np.take(matrix, step.left, axis=0, out=self._left[:count], mode="clip")
            target = matrix[step.first : step.end]
            if step.op == Op.NOT:
                np.bitwise_xor(left, everything, out=target)
                continue
            right = np.take(matrix, step.right, axis=0, out=self._right[:count], mode="clip")
            if step.op == Op.AND:
                np.bitwise_and(left, right, out=target)
            elif step.op == Op.OR:
                np.bitwise_or(left, right, out=target)
            else:
                np.bitwise_and(left, np.invert(right, out=right), out=target)
        return postings(np.take(matrix, self.outputs, axis=0, out=self._out, mode="clip"), block)


def set_bits(matrix: Words, rows: Ints, papers: Ints, block: Block) -> None:
    """Add paper ``papers[i]`` to row ``rows[i]`` for every ``i`` whose paper lies in the block."""
    if block.start or block.size < papers.max(initial=-1) + 1:
        inside = (papers >= block.start) & (papers < block.start + block.size)
        rows, papers = rows[inside], papers[inside] - block.start
    flat = matrix.reshape(-1)
    np.bitwise_or.at(flat, rows * block.words + (papers >> 6), np.left_shift(_ONE, (papers & 63).astype(np.uint64)))


def postings(matrix: Words, block: Block) -> tuple[Ints, Ints]:
    """Each row's papers (numbers in the whole batch): the count per row, and all of them row after row."""
    rows, columns = np.nonzero(matrix)
    words = matrix[rows, columns]
    bit_counts = np.bitwise_count(words).astype(np.int64)
    counts = np.bincount(rows, weights=bit_counts, minlength=len(matrix)).astype(np.int64)
    papers = np.empty(int(bit_counts.sum()), dtype=np.int64)
    place = np.cumsum(bit_counts) - bit_counts  # where each word's lowest paper goes
    base = columns.astype(np.int64) * BITS + block.start
    while len(words):
        lowest = words & (~words + _ONE)
        papers[place] = base + np.bitwise_count(lowest - _ONE)
        words ^= lowest
        left = words != 0
        words, place, base = words[left], place[left] + 1, base[left]
    return counts, papers


def merge(parts: list[tuple[Ints, Ints]]) -> tuple[Ints, Ints]:
    """Join per-block postings of the same rows into offsets and papers, each row's papers in block order."""
    if len(parts) == 1:
        counts, papers = parts[0]
        return offsets_of(counts), papers
    total = np.sum([counts for counts, _ in parts], axis=0)
    offsets = offsets_of(total)
    merged = np.empty(int(offsets[-1]), dtype=np.int64)
    earlier = np.zeros(len(total), dtype=np.int64)  # papers of each row placed by earlier blocks
    for counts, papers in parts:
        row = np.repeat(np.arange(len(counts)), counts)
        first_of_row = np.cumsum(counts) - counts
        merged[offsets[row] + earlier[row] + np.arange(len(papers)) - first_of_row[row]] = papers
        earlier += counts
    return offsets, merged


def offsets_of(counts: Ints) -> Ints:
    """Compressed-row offsets (``len(counts) + 1`` of them, from 0) of rows with these counts."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets
