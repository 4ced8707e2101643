"""The job store against a real moto server: DynamoDB records whose status only moves
forward, large results in S3 behind presigned URLs, expiry and abandoned jobs."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from functions.runtime.job_store import JobInputsMissing, JobNotCancellable, JobStore
from functions.runtime.jobs import Job, JobStatus
from stratoserve.jobs import create_job_resources
from stratoserve.local.aws import DUMMY_CREDENTIALS, REGION, LocalAws, client
from tests.integration.stratoserve.moto import reset_moto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stratoserve.declaration import Declaration
    from stratoserve.jobs import JobResources

TTL_DAYS = 7
INLINE_MAX = 64
MAX_RECEIVES = 5
UNCLAIMED_AFTER_S = 600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Aws:
    resources: JobResources
    dynamodb: Any
    s3: Any


@pytest.fixture(scope="module")
def aws(declaration: Declaration) -> Iterator[Aws]:
    """One moto server for the module, with the declared queue, table and bucket."""
    local = LocalAws()
    url = local.start()
    try:
        resources = create_job_resources(declaration, lambda service: client(service, url))
        yield Aws(resources, client("dynamodb", url), _s3(url))
    finally:
        reset_moto(url)  # moto keeps its state per process, across server instances
        local.stop()


def _s3(url: str) -> Any:
    """An S3 client as the runtime builds one (path-style, SigV4: presigned URLs work)."""
    import boto3
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
    return boto3.client(
        "s3", endpoint_url=url, region_name=REGION, config=config, **DUMMY_CREDENTIALS
    )


def _store(
    aws: Aws, clock: Callable[[], float], on_settled: Callable[[Job], None] | None = None
) -> JobStore:
    return JobStore(
        table=aws.resources.table,
        bucket=aws.resources.bucket,
        dynamodb=aws.dynamodb,
        s3=aws.s3,
        ttl_days=TTL_DAYS,
        result_inline_max_bytes=INLINE_MAX,
        max_receive_count=MAX_RECEIVES,
        unclaimed_after_s=UNCLAIMED_AFTER_S,
        on_settled=on_settled,
        clock=clock,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws: Aws, clock: Clock) -> JobStore:
    return _store(aws, clock)


@pytest.fixture
def tenant() -> str:
    """A tenant of this test's own: tests share the table."""
    return f"tenant-{uuid.uuid4().hex[:8]}"


def _job(tenant: str, clock: Clock, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "tenant": tenant,
        "job_id": str(uuid.uuid4()),
        "status": JobStatus.QUEUED,
        "model": "embed",
        "version": "2",
        "api_version": "v2",
        "inputs": 3,
        "correlation_id": "req-1",
        "created_at": clock.now,
        "updated_at": clock.now,
        "expires_at": int(clock.now + TTL_DAYS * 86_400),
        "request_hash": "hash-1",
        **fields,
    }
    return Job(**values)


def _created(store: JobStore, job: Job) -> Job:
    stored, created = store.create(job)
    assert created
    return stored


def _running(store: JobStore, job: Job) -> Job:
    _created(store, job)
    started = store.start(job.tenant, job.job_id, lease_s=60)
    assert started is not None
    return started


# -- create and read -------------------------------------------------------------------


def test_a_created_job_reads_back_as_it_was_written(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _job(tenant, clock, callback_url="https://example.com/hook")

    assert store.create(job) == (job, True)
    assert store.get(tenant, job.job_id) == job


def test_a_second_create_of_the_id_returns_the_stored_job_unchanged(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    first = _created(store, _job(tenant, clock))
    replay = _job(tenant, clock, job_id=first.job_id, request_hash="hash-2", inputs=9)

    stored, created = store.create(replay)

    assert created is False
    assert stored == first
    assert store.get(tenant, first.job_id) == first


def test_a_job_is_read_only_under_its_own_tenant(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))

    assert store.get("someone-else", job.job_id) is None
    assert store.get(tenant, "no-such-job") is None


def test_jobs_lists_one_tenant_s_jobs_or_every_tenant_s_by_status(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    other = f"{tenant}-other"
    mine = [_created(store, _job(tenant, clock)) for _ in range(3)]
    theirs = _created(store, _job(other, clock))
    store.fail(tenant, mine[0].job_id, "no")

    assert {job.job_id for job in store.jobs(tenant)} == {job.job_id for job in mine}
    assert [job.job_id for job in store.jobs(other)] == [theirs.job_id]
    queued = {job.job_id for job in store.jobs(status=JobStatus.QUEUED)}
    assert {mine[1].job_id, mine[2].job_id, theirs.job_id} <= queued
    assert mine[0].job_id not in queued
    failed = [job.job_id for job in store.jobs(tenant, JobStatus.FAILED)]
    assert failed == [mine[0].job_id]


# -- the status only moves forward -----------------------------------------------------


def test_each_start_is_one_more_attempt_and_keeps_the_first_start_time(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))
    started_at = clock.now

    first = store.start(tenant, job.job_id, lease_s=30)
    clock.now += 5
    second = store.start(tenant, job.job_id, lease_s=30)

    assert first is not None and second is not None
    assert (first.status, first.attempts) == (JobStatus.RUNNING, 1)
    assert (second.status, second.attempts) == (JobStatus.RUNNING, 2)
    assert first.started_at == pytest.approx(started_at)
    assert second.started_at == pytest.approx(started_at)
    assert second.lease_until == pytest.approx(clock.now + 30)
    assert store.get(tenant, job.job_id) == second


def test_a_start_for_a_delivery_takes_sqs_s_receive_count_as_its_attempts(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))
    started_at = clock.now

    # Deliveries 1 and 2 died before they could claim the job: SQS still counted them.
    third = store.start(tenant, job.job_id, lease_s=30, delivery=3)
    clock.now += 5
    again = store.start(tenant, job.job_id, lease_s=30, delivery=3)
    clock.now += 5
    fourth = store.start(tenant, job.job_id, lease_s=30, delivery=4)

    assert third is not None and again is not None and fourth is not None
    assert (third.status, third.attempts) == (JobStatus.RUNNING, 3)
    assert again.attempts == 3, "the same delivery claimed twice is one attempt"
    assert fourth.attempts == 4
    assert fourth.started_at == pytest.approx(started_at)
    assert fourth.lease_until == pytest.approx(clock.now + 30)
    counted = store.start(tenant, job.job_id, lease_s=30)
    assert counted is not None
    assert counted.attempts == 5, "without a delivery: one more"


def test_a_missing_job_cannot_be_started(store: JobStore, tenant: str) -> None:
    assert store.start(tenant, "no-such-job", lease_s=30) is None
    assert store.get(tenant, "no-such-job") is None, "start created no record"


def test_the_first_result_is_stored_and_a_second_is_refused(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    store.note_error(tenant, job.job_id, "the first attempt timed out")
    clock.now += 1

    assert store.succeed(job, b'{"outputs":[1]}') is True
    assert store.succeed(job, b'{"outputs":[2]}') is False

    stored = store.get(tenant, job.job_id)
    assert stored is not None
    assert stored.status == JobStatus.SUCCEEDED
    assert stored.result == '{"outputs":[1]}'
    assert stored.result_key is None
    assert stored.finished_at == pytest.approx(clock.now)
    assert stored.lease_until is None
    assert stored.error is None, "a success clears the last attempt's error"
    assert store.result(stored) == b'{"outputs":[1]}'


def test_a_queued_job_cannot_succeed_without_being_started(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))

    assert store.succeed(job, b"[1]") is False
    assert store.get(tenant, job.job_id) == job


def test_a_large_result_goes_to_s3_behind_a_presigned_url(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    result = orjson.dumps({"outputs": [[0.125] * 64 for _ in range(4)]})
    assert len(result) > INLINE_MAX

    assert store.succeed(job, result) is True

    stored = store.get(tenant, job.job_id)
    assert stored is not None
    assert stored.result is None
    # Named by the job's creation time as well as its id: see the expired-id test below.
    assert stored.result_key == f"results/{tenant}/{job.job_id}/{int(job.created_at * 1000)}.json"
    assert stored.result_bytes == len(result)
    answer = httpx.get(store.result_url(stored, expires_s=60), timeout=10)
    assert answer.status_code == 200
    assert answer.content == result
    assert store.result(stored) == result


def test_a_late_large_result_does_not_replace_the_stored_one(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    first = orjson.dumps({"outputs": ["first"] * 40})
    late = orjson.dumps({"outputs": ["late"] * 40})

    assert store.succeed(job, first) is True
    assert store.succeed(job, late) is False

    stored = store.get(tenant, job.job_id)
    assert stored is not None
    assert stored.result_bytes == len(first)
    assert store.result(stored) == first


def test_a_result_exactly_at_the_inline_limit_stays_in_the_record(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    result = b'"' + b"x" * (INLINE_MAX - 2) + b'"'

    assert store.succeed(job, result) is True

    stored = store.get(tenant, job.job_id)
    assert stored is not None
    assert (stored.result, stored.result_key) == (result.decode(), None)


def test_a_succeeded_job_cannot_be_failed_cancelled_started_or_requeued(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    store.succeed(job, b"[1]")
    succeeded = store.get(tenant, job.job_id)

    assert store.fail(tenant, job.job_id, "too late") is False
    assert store.start(tenant, job.job_id, lease_s=30) is None
    assert store.requeue(tenant, job.job_id) is False
    assert store.note_error(tenant, job.job_id, "too late") is False
    with pytest.raises(JobNotCancellable, match=r"not queued \(status: succeeded\)") as caught:
        store.cancel(tenant, job.job_id)
    assert caught.value.job == succeeded
    assert store.get(tenant, job.job_id) == succeeded


def test_a_failed_job_keeps_its_reason_and_cannot_succeed(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))

    assert store.fail(tenant, job.job_id, "the model refused the inputs") is True
    assert store.fail(tenant, job.job_id, "another reason") is False
    assert store.succeed(job, b"[1]") is False
    assert store.start(tenant, job.job_id, lease_s=30) is None

    failed = store.get(tenant, job.job_id)
    assert failed is not None
    assert failed.status == JobStatus.FAILED
    assert failed.error == "the model refused the inputs"
    assert failed.result is None
    assert failed.lease_until is None


def test_a_job_whose_message_was_not_sent_is_failed_only_if_no_worker_has_it(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    unsent = _created(store, _job(tenant, clock))
    claimed = _running(store, _job(tenant, clock))
    redriven = _running(store, _job(tenant, clock))
    store.fail(tenant, redriven.job_id, "out of memory")
    store.requeue(tenant, redriven.job_id)
    store.start(tenant, redriven.job_id, lease_s=30)
    store.fail(tenant, redriven.job_id, "out of memory again")
    finished = store.get(tenant, redriven.job_id)
    clock.now += 1

    assert store.fail_unsent(tenant, unsent.job_id, "the job could not be queued (x)") is True
    # The send reached SQS before it failed on the way back, and a worker claimed the job.
    assert store.fail_unsent(tenant, claimed.job_id, "the job could not be queued (x)") is False
    assert store.fail_unsent(tenant, redriven.job_id, "the job could not be queued (x)") is False
    assert store.fail_unsent(tenant, "no-such-job", "the job could not be queued (x)") is False

    failed = store.get(tenant, unsent.job_id)
    assert failed is not None
    assert (failed.status, failed.error, failed.attempts) == (
        JobStatus.FAILED,
        "the job could not be queued (x)",
        0,
    )
    assert failed.finished_at == pytest.approx(clock.now)
    assert store.get(tenant, claimed.job_id) == claimed
    assert store.get(tenant, redriven.job_id) == finished
    assert store.get(tenant, "no-such-job") is None, "no record was made"


def test_only_a_queued_job_can_be_cancelled(store: JobStore, tenant: str, clock: Clock) -> None:
    queued = _created(store, _job(tenant, clock))
    running = _running(store, _job(tenant, clock))

    cancelled = store.cancel(tenant, queued.job_id)
    assert cancelled is not None
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert store.start(tenant, queued.job_id, lease_s=30) is None, "a cancelled job never runs"
    assert store.fail(tenant, queued.job_id, "no") is False
    assert store.cancel(tenant, queued.job_id) == cancelled, "a cancelled job answers again"

    with pytest.raises(JobNotCancellable, match=r"\(status: running\)") as caught:
        store.cancel(tenant, running.job_id)
    assert caught.value.job.status == JobStatus.RUNNING
    stored = store.get(tenant, running.job_id)
    assert stored is not None
    assert stored.status == JobStatus.RUNNING

    assert store.cancel(tenant, "no-such-job") is None
    assert store.cancel("someone-else", queued.job_id) is None


def test_a_requeued_failed_job_starts_again_from_its_first_attempt(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _running(store, _job(tenant, clock))
    store.start(tenant, job.job_id, lease_s=30)
    store.fail(tenant, job.job_id, "out of memory")

    assert store.requeue(tenant, job.job_id) is True

    requeued = store.get(tenant, job.job_id)
    assert requeued is not None
    assert requeued.status == JobStatus.QUEUED
    assert requeued.attempts == 0
    assert requeued.redrives == 1
    assert (requeued.error, requeued.started_at, requeued.finished_at) == (None, None, None)
    assert store.requeue(tenant, job.job_id) is False, "a queued job is not requeued"
    restarted = store.start(tenant, job.job_id, lease_s=30)
    assert restarted is not None
    assert restarted.attempts == 1


# -- time: expiry and abandoned attempts -----------------------------------------------


def test_an_expired_job_reads_as_gone_and_its_id_can_be_taken_again(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))

    clock.now = job.expires_at + 1

    assert store.get(tenant, job.job_id) is None
    assert list(store.jobs(tenant)) == []
    assert store.cancel(tenant, job.job_id) is None
    fresh = _job(tenant, clock, job_id=job.job_id, request_hash="hash-2")
    assert store.create(fresh) == (fresh, True)
    assert store.get(tenant, job.job_id) == fresh


def _abandoned(store: JobStore, tenant: str, clock: Clock, deliveries: int) -> Job:
    """A job delivered `deliveries` times, each attempt's lease ending without a word."""
    job = _created(store, _job(tenant, clock))
    for _ in range(deliveries):
        started = store.start(tenant, job.job_id, lease_s=10)
        assert started is not None
        clock.now += 11
    return job


def test_a_job_whose_last_delivery_was_abandoned_reads_as_failed(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _abandoned(store, tenant, clock, MAX_RECEIVES)

    settled = store.get(tenant, job.job_id)

    assert settled is not None
    assert settled.status == JobStatus.FAILED
    assert settled.error is not None
    assert "dead-letter queue" in settled.error
    assert f"{MAX_RECEIVES} deliveries" in settled.error
    assert settled.finished_at == pytest.approx(clock.now)
    (listed,) = store.jobs(tenant)
    assert listed.status == JobStatus.FAILED, "the record itself was failed"
    assert store.requeue(tenant, job.job_id) is True, "a redrive can still run it"


def test_an_abandoned_job_s_reason_carries_its_last_error(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _abandoned(store, tenant, clock, MAX_RECEIVES)
    # The running record is still there for note_error (get would settle it first).
    store.note_error(tenant, job.job_id, "Task timed out after 60.00 seconds")

    (listed,) = store.jobs(tenant)

    assert listed.status == JobStatus.FAILED
    assert listed.error is not None
    assert "(last error: Task timed out after 60.00 seconds)" in listed.error


def test_a_job_with_deliveries_or_lease_left_is_still_running(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    retried = _abandoned(store, tenant, clock, MAX_RECEIVES - 1)
    leased = _created(store, _job(tenant, clock))
    for _ in range(MAX_RECEIVES):
        store.start(tenant, leased.job_id, lease_s=10)

    for job_id in (retried.job_id, leased.job_id):
        job = store.get(tenant, job_id)
        assert job is not None
        assert job.status == JobStatus.RUNNING, job_id
    assert {job.status for job in store.jobs(tenant)} == {JobStatus.RUNNING}


def test_the_declared_bound_follows_the_queue_settings(declaration: Declaration) -> None:
    jobs = declaration.jobs
    deliveries = (jobs.batching_window_s + declaration.visibility_timeout_s()) * (
        jobs.max_receive_count
    )
    assert declaration.unclaimed_job_after_s() > deliveries
    assert declaration.unclaimed_job_after_s() < deliveries + 900


@pytest.mark.parametrize(
    ("message_id", "how"),
    [(None, "never sent"), ("msg-1", "sent, then dead-lettered unclaimed")],
    ids=["never-sent", "dead-lettered"],
)
def test_a_job_no_worker_ever_claimed_reads_as_failed_with_why(
    aws: Aws, tenant: str, clock: Clock, message_id: str | None, how: str
) -> None:
    heard: list[Job] = []
    store = _store(aws, clock, heard.append)
    job = _created(store, _job(tenant, clock))
    if message_id is not None:
        store.record_sent(tenant, job.job_id, message_id)

    clock.now += UNCLAIMED_AFTER_S + 1
    settled = store.get(tenant, job.job_id)

    assert settled is not None
    assert settled.status == JobStatus.FAILED
    assert settled.error is not None
    assert f"no worker claimed it within {UNCLAIMED_AFTER_S} s" in settled.error
    assert how in settled.error
    assert settled.finished_at == pytest.approx(clock.now)
    assert [stuck.job_id for stuck in heard] == [job.job_id], "heard once, by the settling read"
    (listed,) = store.jobs(tenant)
    assert listed.status == JobStatus.FAILED
    assert list(store.jobs(tenant, JobStatus.QUEUED)) == []
    assert len(heard) == 1
    # A late delivery finds it failed and leaves it; a replay of its key answers it.
    assert store.start(tenant, job.job_id, lease_s=60, delivery=1) is None
    assert store.create(job) == (settled, False)
    assert store.requeue(tenant, job.job_id) is True, "a redrive can still run it"


def test_a_queued_job_within_the_bound_or_claimed_stays_as_it_is(
    aws: Aws, tenant: str, clock: Clock
) -> None:
    heard: list[Job] = []
    store = _store(aws, clock, heard.append)
    fresh = _created(store, _job(tenant, clock))
    claimed = _created(store, _job(tenant, clock))
    store.start(tenant, claimed.job_id, lease_s=UNCLAIMED_AFTER_S * 10, delivery=1)

    clock.now += UNCLAIMED_AFTER_S - 1
    assert store.get(tenant, fresh.job_id) == fresh
    clock.now += 2
    running = store.get(tenant, claimed.job_id)

    assert running is not None and running.status == JobStatus.RUNNING
    assert heard == []


def test_the_sweep_fails_stuck_jobs_nobody_reads_and_leaves_the_rest(
    aws: Aws, tenant: str, clock: Clock
) -> None:
    heard: list[Job] = []
    store = _store(aws, clock, heard.append)
    never_sent = _created(store, _job(tenant, clock))
    abandoned = _running(store, _job(tenant, clock))
    for delivery in range(2, MAX_RECEIVES + 1):  # every delivery died without a word
        store.start(tenant, abandoned.job_id, lease_s=60, delivery=delivery)
    finished = _running(store, _job(tenant, clock))
    store.succeed(finished, b"[1]")
    clock.now += UNCLAIMED_AFTER_S + 1
    fresh = _created(store, _job(tenant, clock))

    # The table is shared with the other tests: theirs may be stuck too by now.
    assert store.sweep() >= 2
    mine = {job.job_id for job in heard if job.tenant == tenant}
    assert mine == {never_sent.job_id, abandoned.job_id}, "each heard once"
    statuses = {job.job_id: job.status for job in store.jobs(tenant)}
    assert statuses == {
        never_sent.job_id: JobStatus.FAILED,
        abandoned.job_id: JobStatus.FAILED,
        finished.job_id: JobStatus.SUCCEEDED,
        fresh.job_id: JobStatus.QUEUED,
    }
    heard.clear()
    store.sweep()
    assert [job for job in heard if job.tenant == tenant] == [], "settled once, not again"


def test_pending_callbacks_are_finished_jobs_whose_callback_no_one_queued(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    url = "https://example.com/hook"
    settled = _created(store, _job(tenant, clock, callback_url=url))
    succeeded = _running(store, _job(tenant, clock, callback_url=url))
    store.succeed(succeeded, b"[1]")
    queued_already = _running(store, _job(tenant, clock, callback_url=url))
    store.succeed(queued_already, b"[1]")
    store.callback_enqueued(tenant, queued_already.job_id)
    cancelled = _created(store, _job(tenant, clock, callback_url=url))
    store.cancel(tenant, cancelled.job_id)
    no_url = _running(store, _job(tenant, clock))
    store.succeed(no_url, b"[1]")
    clock.now += UNCLAIMED_AFTER_S + 1
    assert store.sweep() >= 1  # `settled` fails, never claimed
    recent = _running(store, _job(tenant, clock, callback_url=url))
    store.succeed(recent, b"[1]")

    def pending(before: float) -> set[str]:
        jobs = store.pending_callbacks(finished_before=before)
        return {job.job_id for job in jobs if job.tenant == tenant}

    # Finished before the bound, with a URL, never queued: called back by the sweep.
    assert pending(clock.now - 1) == {succeeded.job_id}
    assert pending(clock.now + 1) == {settled.job_id, succeeded.job_id, recent.job_id}
    assert store.callback_enqueued(tenant, succeeded.job_id) is True
    assert pending(clock.now + 1) == {settled.job_id, recent.job_id}


def test_a_callback_outcome_is_recorded_on_the_job(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock, callback_url="https://example.com/hook"))
    outcome = {"delivered": True, "attempts": 2, "status": 204}

    store.record_callback(tenant, job.job_id, outcome)

    stored = store.get(tenant, job.job_id)
    assert stored is not None
    assert stored.callback == outcome


def test_a_callback_outcome_never_makes_a_record_of_its_own(
    aws: Aws, store: JobStore, tenant: str
) -> None:
    """The record may have expired (and been swept) while the callback was sent."""
    assert store.record_callback(tenant, "swept-job", {"delivered": True, "attempts": 1}) is False
    assert store.callback_enqueued(tenant, "swept-job") is False

    item = aws.dynamodb.get_item(
        TableName=aws.resources.table,
        Key={"tenant": {"S": tenant}, "job_id": {"S": "swept-job"}},
        ConsistentRead=True,
    )
    assert "Item" not in item


def test_a_callback_is_enqueued_once_and_a_delivery_is_never_overwritten(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock, callback_url="https://example.com/hook"))
    delivered = {"state": "delivered", "delivered": True, "attempts": 1, "status": 204}

    assert store.callback_enqueued(tenant, job.job_id) is True
    assert store.callback_enqueued(tenant, job.job_id) is False, "pending no more"
    assert _stored(store, tenant, job.job_id).callback == {"state": "enqueued", "delivered": False}
    assert store.record_callback(tenant, job.job_id, delivered) is True
    # A duplicate message's failed attempt, recorded after the delivery, changes nothing.
    late = {"state": "failed", "delivered": False, "attempts": 1, "error": "HTTP 500"}
    assert store.record_callback(tenant, job.job_id, late) is False

    assert _stored(store, tenant, job.job_id).callback == delivered


def test_a_job_without_a_callback_url_has_no_callback_to_enqueue(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))

    assert store.callback_enqueued(tenant, job.job_id) is False
    assert _stored(store, tenant, job.job_id).callback is None


def test_a_redriven_job_is_called_back_again_when_it_finishes_again(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock, callback_url="https://example.com/hook"))
    assert store.start(tenant, job.job_id, lease_s=60) is not None
    assert store.fail(tenant, job.job_id, "boom")
    assert store.callback_enqueued(tenant, job.job_id)
    assert store.record_callback(tenant, job.job_id, {"state": "delivered", "delivered": True})

    assert store.requeue(tenant, job.job_id)

    assert _stored(store, tenant, job.job_id).callback is None
    assert store.callback_enqueued(tenant, job.job_id) is True


def _stored(store: JobStore, tenant: str, job_id: str) -> Job:
    job = store.get(tenant, job_id)
    assert job is not None
    return job


# -- inputs in S3 ----------------------------------------------------------------------


def test_inputs_put_in_the_bucket_come_back(store: JobStore, tenant: str, clock: Clock) -> None:
    inputs = ["a text", {"nested": [1, 2.5, None]}, [0] * 64]
    job = _job(tenant, clock)

    key = store.put_inputs(job, orjson.dumps(inputs))

    assert key == f"inputs/{tenant}/{job.job_id}/{int(job.created_at * 1000)}.json"
    assert store.inputs(key) == inputs


def test_an_id_taken_again_after_it_expired_does_not_find_the_old_payloads(
    store: JobStore, tenant: str, clock: Clock
) -> None:
    """An idempotency key's job id comes back after the TTL: the new job's inputs and
    result must be its own, not what the bucket still holds of the old one's."""
    old = _running(store, _job(tenant, clock))
    old_inputs = store.put_inputs(old, orjson.dumps(["old"] * 40))
    assert store.succeed(old, orjson.dumps({"outputs": ["old"] * 40})) is True
    clock.now = old.expires_at + 1
    new = _job(tenant, clock, job_id=old.job_id, request_hash="hash-2")
    assert store.create(new) == (new, True)

    new_inputs = store.put_inputs(new, orjson.dumps(["new"] * 40))
    started = store.start(tenant, new.job_id, lease_s=30)
    assert started is not None
    assert store.succeed(started, orjson.dumps({"outputs": ["new"] * 40})) is True

    assert new_inputs != old_inputs
    assert store.inputs(new_inputs) == ["new"] * 40
    assert store.inputs(old_inputs) == ["old"] * 40
    stored = store.get(tenant, new.job_id)
    assert stored is not None
    assert store.result(stored) == orjson.dumps({"outputs": ["new"] * 40})


def test_inputs_that_are_gone_say_so(store: JobStore, tenant: str) -> None:
    with pytest.raises(JobInputsMissing, match=rf"inputs/{tenant}/gone\.json"):
        store.inputs(f"inputs/{tenant}/gone.json")


class CountingClock(Clock):
    """A clock that stops a runaway loop: it refuses to be read more than `limit` times."""

    def __init__(self, now: float, limit: int) -> None:
        self.now = now
        self.reads = 0
        self.limit = limit

    def __call__(self) -> float:
        self.reads += 1
        assert self.reads <= self.limit, f"the clock was read {self.reads} times"
        return self.now


def test_an_id_can_be_taken_again_within_the_second_its_record_expires(
    aws: Aws, store: JobStore, tenant: str, clock: Clock
) -> None:
    job = _created(store, _job(tenant, clock))
    # Half a second after the record expired: it reads as gone, so its id is free.
    late = _store(aws, CountingClock(job.expires_at + 0.5, limit=20))
    assert late.get(tenant, job.job_id) is None
    fresh = _job(tenant, clock, job_id=job.job_id, request_hash="hash-2")

    assert late.create(fresh) == (fresh, True)
