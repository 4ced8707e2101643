"""The [jobs] table, functions.worker and routing.<model>.job_max_inputs: sensible defaults,
and one line per problem, naming the key."""

from __future__ import annotations

import textwrap
import tomllib
from typing import TYPE_CHECKING

import pytest

from stratoserve.declaration import DeclarationError, load_declaration
from stratoserve.declaration.schema import WORKER_FUNCTION
from tests.conftest import DECLARATION_FILE
from tests.unit.stratoserve.declaration.minimal import declaration_problems, write_declaration

if TYPE_CHECKING:
    from pathlib import Path


_write = write_declaration
_problems = declaration_problems


def test_the_shipped_declaration_declares_the_worker_and_the_jobs_queue() -> None:
    declaration = load_declaration(DECLARATION_FILE)
    # The file's own numbers, as written: the loader must keep them, whatever they are.
    written = tomllib.loads(DECLARATION_FILE.read_text())

    worker = declaration.functions[WORKER_FUNCTION]
    assert worker.models == []
    assert worker.timeout_s == written["functions"]["worker"]["timeout_s"]
    assert "visibility_timeout_s" not in written["jobs"], "the default: 6x the worker"
    assert declaration.visibility_timeout_s() == 6 * worker.timeout_s
    assert declaration.jobs.max_receive_count == written["jobs"]["max_receive_count"]
    embed = declaration.routing_for("embed")
    assert embed.inline_max_inputs == written["routing"]["embed"]["inline_max_inputs"]
    assert embed.job_max_inputs == written["routing"]["embed"]["job_max_inputs"]
    assert embed.inline_max_inputs < embed.job_max_inputs


def test_without_a_jobs_table_the_defaults_hold(tmp_path: Path) -> None:
    declaration = load_declaration(_write(tmp_path, ""))

    worker = declaration.functions[WORKER_FUNCTION]
    assert (worker.models, worker.memory_mb, worker.timeout_s) == ([], 2048, 60)
    assert declaration.visibility_timeout_s() == 6 * 60
    assert declaration.jobs.batch_size == 10
    assert declaration.jobs.max_receive_count >= 5
    assert declaration.routing_for("digits").job_max_inputs == 10_000
    assert "/v1/jobs" in declaration.resource_paths()
    assert "/v1/jobs/{job_id}" in declaration.resource_paths()


def test_a_declared_visibility_timeout_and_worker_timeout_are_used(tmp_path: Path) -> None:
    declaration = load_declaration(
        _write(
            tmp_path,
            """
            [functions.worker]
            timeout_s = 20
            [jobs]
            visibility_timeout_s = 120
            batch_size = 100
            batching_window_s = 1
            """,
        )
    )

    assert declaration.functions[WORKER_FUNCTION].timeout_s == 20
    assert declaration.visibility_timeout_s() == 120
    assert declaration.jobs.batch_size == 100


def test_a_batch_over_ten_needs_a_batching_window(tmp_path: Path) -> None:
    assert _problems(tmp_path, "[jobs]\nbatch_size = 11\nbatching_window_s = 0\n") == [
        "jobs.batching_window_s: must be at least 1 when batch_size is over 10 (AWS's rule)"
    ]
    assert load_declaration(_write(tmp_path, "[jobs]\nbatch_size = 10\nbatching_window_s = 0\n"))


def test_the_visibility_timeout_must_cover_six_worker_timeouts(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [functions.worker]
        timeout_s = 30
        [jobs]
        visibility_timeout_s = 179
        """,
    )

    assert problems == [
        "jobs.visibility_timeout_s: must be at least 180 (6x functions.worker.timeout_s), "
        "or a slow batch is delivered twice"
    ]


def test_without_a_declared_worker_the_default_worker_timeout_counts(tmp_path: Path) -> None:
    assert _problems(tmp_path, "[jobs]\nvisibility_timeout_s = 300\n") == [
        "jobs.visibility_timeout_s: must be at least 360 (6x functions.worker.timeout_s), "
        "or a slow batch is delivered twice"
    ]


def test_the_worker_serves_no_declared_models(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [functions.worker]
        models = ["digits"]
        """,
    )

    assert problems == [
        "functions.worker.models: the worker runs every model's jobs; leave models out"
    ]


def test_a_model_cannot_take_the_worker_s_name(tmp_path: Path) -> None:
    path = tmp_path / "stratoserve.toml"
    path.write_text(
        textwrap.dedent(
            """
            [models.worker]
            task = "classify"
            [models.worker.versions.1]
            artifact = "worker.onnx"
            [api.v1]
            models = { worker = "1" }
            """
        )
    )

    with pytest.raises(DeclarationError) as caught:
        load_declaration(path)

    assert caught.value.problems == [
        "models.worker: the name worker is reserved for the worker function"
    ]


def test_a_job_may_not_carry_fewer_inputs_than_the_inline_path(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [routing.digits]
        inline_max_inputs = 64
        job_max_inputs = 63
        """,
    )

    assert problems == ["routing.digits.job_max_inputs: must be at least inline_max_inputs (64)"]


def test_the_default_job_limit_is_checked_against_a_raised_inline_limit(tmp_path: Path) -> None:
    assert _problems(tmp_path, "[routing.digits]\ninline_max_inputs = 20000\n") == [
        "routing.digits.job_max_inputs: must be at least inline_max_inputs (20000)"
    ]


def test_structural_problems_in_jobs_name_the_key(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [jobs]
        max_receive_count = 4
        batch_size = 0
        callback_attempts = 11
        batchsize = 5
        """,
    )

    assert problems == [
        "jobs.batch_size: must be at least 1",
        "jobs.max_receive_count: must be at least 5",
        "jobs.callback_attempts: must be at most 10",
        "jobs.batchsize: unknown key (did you mean batch_size?)",
    ]


def test_problems_in_jobs_come_together_with_others(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
        [functions.worker]
        models = ["digits"]
        timeout_s = 10
        [routing.digits]
        job_max_inputs = 1
        [jobs]
        batch_size = 50
        batching_window_s = 0
        visibility_timeout_s = 59
        """,
    )

    assert problems == [
        "functions.worker.models: the worker runs every model's jobs; leave models out",
        "jobs.batching_window_s: must be at least 1 when batch_size is over 10 (AWS's rule)",
        "jobs.visibility_timeout_s: must be at least 60 (6x functions.worker.timeout_s), "
        "or a slow batch is delivered twice",
        "routing.digits.job_max_inputs: must be at least inline_max_inputs (64)",
    ]
