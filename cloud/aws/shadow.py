"""Shadow judging from the router functions: sampled edge answers go to the judge function.

A Lambda execution environment is frozen once its invocation's response is out, and an asyncio task
started for a shadow job would be frozen with it. So in Lambda the engine's `ShadowJudge` is handed
off to a `JudgeFunctionDispatcher` (`LambdaEnvironment` does it for every engine): `put` keeps the
job's JSON (`ShadowJob.to_json`) in memory, and at the end of the invocation, after the outcome
records are written (the verdict joins a record already in the table), `flush` sends each job as an
asynchronous invocation (`InvocationType="Event"`) of the judge function the template names in
`HYBRID_ROUTER_JUDGE_FUNCTION` (`hyrouter.cloud.aws.judge`).

An asynchronous invoke is one quick API call: Lambda queues the event and answers 202 at once, and
the cloud answer and the judge run in the judge function, so the response waits for that call
alone (typically 10-30 ms), and only for an answer that was sampled. The client's timeouts bound it
(`INVOKE_TIMEOUTS_S`: 0.5 s to connect, 1 s to read) and it is made once (`INVOKE_MAX_ATTEMPTS`: no
retry), so a slow Lambda API delays a response by at most about 1.5 s per sampled answer; a failed
call is logged and counted (`failed`), never raised: the job is lost, the response is not. A job over
the asynchronous payload limit is not sampled (counted as a full queue).

Without the variable, a router function that is configured to shadow-judge logs one warning per
engine build and samples nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.router._shadow import ShadowJob

logger = logging.getLogger("hybrid_router.shadow")

ENV_JUDGE_FUNCTION = LambdaSettings.env_name("judge_function")

#: The largest event an asynchronous invocation takes (bytes).
MAX_EVENT_BYTES = 256 * 1024

#: Connect and read timeouts of the Invoke call (seconds): the response waits for it.
INVOKE_TIMEOUTS_S = (0.5, 1.0)
#: Attempts of the Invoke call (botocore's `max_attempts` counts the first): one, never a retry, so the
#: response waits for at most one connect and one read timeout; a lost job is a lost sample.
INVOKE_MAX_ATTEMPTS = 1


class JudgeFunctionDispatcher:
    """A `ShadowDispatcher` that holds an invocation's jobs and sends them to the judge function."""

    def __init__(self, function_name: str, *, client: Any = None, max_jobs: int = 16) -> None:
        """Send to `function_name` with `client` (a boto3 Lambda client; None: made on first send);
        at most `max_jobs` are held between two flushes (more are refused)."""
        self.function_name = function_name
        self.max_jobs = max_jobs
        self._client = client
        self._lock = threading.Lock()
        self._held: list[tuple[str, bytes]] = []
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"JudgeFunctionDispatcher({self.function_name!r}, held={len(self._held)})"

    def put(self, job: ShadowJob) -> bool:
        """Hold `job` until `flush`; False when it is too large for an event or too many are held."""
        try:
            payload = json.dumps(job.to_json(), separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError):
            logger.exception("shadow job %s cannot be sent", job.completion_id)
            return False
        if len(payload) > MAX_EVENT_BYTES:
            logger.info("shadow job %s is over the event limit (%d bytes)", job.completion_id, len(payload))
            return False
        with self._lock:
            if len(self._held) >= self.max_jobs:
                return False
            self._held.append((job.completion_id, payload))
        return True

    @property
    def held(self) -> int:
        """Jobs waiting for the next `flush`."""
        return len(self._held)

    def flush(self) -> int:
        """Send every held job as an asynchronous invocation; the number sent. Never raises."""
        with self._lock:
            held, self._held = self._held, []
        sent = 0
        for completion_id, payload in held:
            try:
                self.client().invoke(FunctionName=self.function_name, InvocationType="Event", Payload=payload)
            except Exception as exc:  # the job is lost, the response is not
                self.failed += 1
                logger.warning(
                    "sending shadow job %s to %s failed: %s", completion_id, self.function_name, exc
                )
            else:
                sent += 1
        self.sent += sent
        return sent

    def client(self) -> Any:
        """The boto3 Lambda client (`invoke_client`), made on first use when none was given."""
        if self._client is None:
            self._client = invoke_client()
        return self._client


def invoke_client() -> Any:
    """A boto3 Lambda client for the Invoke calls (`invoke_client_config`)."""
    import boto3

    return boto3.client("lambda", config=invoke_client_config())


def invoke_client_config() -> Any:
    """The botocore config of the Lambda client: short timeouts (`INVOKE_TIMEOUTS_S`), one attempt
    (`INVOKE_MAX_ATTEMPTS`)."""
    from botocore.config import Config  # type: ignore[import-untyped]

    connect, read = INVOKE_TIMEOUTS_S
    return Config(
        connect_timeout=connect,
        read_timeout=read,
        retries={"total_max_attempts": INVOKE_MAX_ATTEMPTS, "mode": "standard"},
    )


def judge_dispatcher(settings: LambdaSettings, *, client: Any = None) -> JudgeFunctionDispatcher | None:
    """The dispatcher to the judge function `settings` name; None when they name none.

    Its client is made now, at the environment's start: importing boto3 and making a client takes
    a few hundred ms, which the first sampled answer's response would otherwise wait for.
    """
    if not settings.judge_function:
        return None
    return JudgeFunctionDispatcher(settings.judge_function, client=client or invoke_client())
