"""Channel generations: random, well-formed, never the empty one, and never shared by a forked
worker with its parent (tokens are drawn a batch at a time, per process)."""

from __future__ import annotations

import os

from flask_ssecors.brokers._base import EMPTY_GENERATION
from flask_ssecors.brokers._base import GENERATION_LENGTH
from flask_ssecors.brokers._base import new_generation
from flask_ssecors.brokers._base import split_id


def test_tokens_are_well_formed_and_distinct() -> None:
    tokens = [new_generation() for _ in range(5000)]  # many batches
    assert len(set(tokens)) == len(tokens)
    assert EMPTY_GENERATION not in tokens
    for token in tokens:
        assert len(token) == GENERATION_LENGTH
        assert split_id(f"{token}.1-0") == (token, "1-0")


def test_a_forked_process_draws_its_own_tokens() -> None:
    new_generation()  # the parent holds a batch
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        os.write(write, ",".join(new_generation() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split(","))
    os.waitpid(child, 0)
    ours = {new_generation() for _ in range(100)}
    assert len(theirs) == 100
    assert not ours & theirs
