"""gpu_jobs.engine without models: batches that pad little, jobs answered in input order."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from gpu_jobs.engine import batches, check_served, run_job, served

if TYPE_CHECKING:
    from stratoserve.declaration import Declaration


def test_batches_group_inputs_of_about_one_length_within_the_size() -> None:
    texts = ["a" * length for length in (9, 1, 7, 3, 5, 2, 8, 4, 6)]

    chunks = batches(texts, 4)

    assert [len(chunk) for chunk in chunks] == [4, 4, 1]
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(texts)))
    lengths = [[len(texts[index]) for index in chunk] for chunk in chunks]
    assert lengths == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_batches_of_rows_and_of_nothing() -> None:
    assert batches([[1.0, 2.0], [1.0]], 8) == [[1, 0]]
    assert batches([], 8) == []
    with pytest.raises(ValueError, match="at least 1"):
        batches(["a"], 0)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_run_job_answers_in_the_inputs_order(concurrency: int) -> None:
    texts = [f"text {'x' * (index * 7 % 13)} {index}" for index in range(50)]
    seen: list[list[str]] = []
    lock = threading.Lock()

    def predict(batch: list[Any]) -> list[Any]:
        with lock:
            seen.append(batch)
        return [f"out:{text}" for text in batch]

    result = run_job(
        {"model": "embed", "version": "1", "inputs": texts}, predict, 8, concurrency=concurrency
    )

    assert result == {"outputs": [f"out:{text}" for text in texts]}
    assert max(len(batch) for batch in seen) <= 8
    assert sum(len(batch) for batch in seen) == len(texts)


def test_run_job_refuses_a_predict_that_loses_outputs() -> None:
    with pytest.raises(RuntimeError, match="1 outputs for a batch of 2"):
        run_job({"inputs": ["a", "b"]}, lambda batch: batch[:1], 4)


def test_the_gpu_layer_serves_each_version_an_api_version_serves(declaration: Declaration) -> None:
    assert served(declaration) == {"embed": ["1", "2"]}
    check_served(declaration, "embed", "2")
    with pytest.raises(LookupError, match="model digits is not served"):
        check_served(declaration, "digits", "1")
    with pytest.raises(LookupError, match="version 9 is not served"):
        check_served(declaration, "embed", "9")
