"""`EdgeRouter.feedback`: a cloud answer is rated at the cloud router, a local one in the device's records."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hyrouter.router import OutcomeNotFound, RequestError
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.unit.test_edge_router import EASY, CloudRouter, make

pytestmark = pytest.mark.anyio


class RatingCloud(CloudRouter):
    """The mock cloud router, with `POST /v1/feedback`: it knows the id of the answer it gave."""

    def __init__(self) -> None:
        super().__init__()
        self.ratings: list[dict[str, object]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/feedback"):
            return await super().__call__(request)
        self.calls.append(request)
        body = json.loads(request.content)
        if body["id"] != "chatcmpl-1":
            error = {"message": "not found", "type": "invalid_request_error", "code": "outcome_not_found"}
            return httpx.Response(404, json={"error": error})
        self.ratings.append(body)
        return httpx.Response(200, json={"id": body["id"], "object": "feedback", "rating": body["rating"]})


async def test_a_cloud_answer_is_rated_at_the_cloud_router_with_the_device_key(tmp_path: Path) -> None:
    cloud = RatingCloud()
    router = make(cloud, tier="premium", outcomes={"path": str(tmp_path / "device.sqlite3")})
    answer = await router.complete(EASY)
    assert answer.route is not None and answer.route.target == "cloud"
    await router.feedback(answer.id, -1, "wrong city")
    assert cloud.ratings == [{"id": "chatcmpl-1", "rating": -1.0, "comment": "wrong city"}]
    [call] = [c for c in cloud.calls if c.url.path.endswith("/feedback")]
    assert call.headers["authorization"] == "Bearer device-key"
    await router.aclose()


async def test_a_local_answer_is_rated_in_the_devices_own_records(tmp_path: Path) -> None:
    cloud = RatingCloud()
    path = tmp_path / "device.sqlite3"
    router = make(cloud, outcomes={"path": str(path), "salt": "s"})
    answer = await router.complete(EASY)
    assert answer.route is not None and answer.route.target == "edge"
    await router.feedback(answer.id, 0.5)
    await router.aclose()
    assert cloud.calls == []  # nothing left the device
    record = SqliteOutcomeStore(path).get(answer.id)
    assert record is not None and (record["rating"], record["target"], record["tenant"]) == (
        0.5,
        "edge",
        "device",
    )


async def test_unknown_ids_and_bad_ratings_are_refused(tmp_path: Path) -> None:
    cloud = RatingCloud()
    router = make(cloud, outcomes={"path": str(tmp_path / "device.sqlite3")})
    with pytest.raises(OutcomeNotFound):
        await router.feedback("chatcmpl-never", 1)
    answer = await router.complete(EASY)
    with pytest.raises(RequestError):
        await router.feedback(answer.id, 7)
    without_records = make(cloud)
    local = await without_records.complete(EASY)
    with pytest.raises(OutcomeNotFound):  # answered here, but the device keeps no records
        await without_records.feedback(local.id, 1)
    await router.aclose()
    await without_records.aclose()


async def test_the_cloud_routers_404_is_outcome_not_found(tmp_path: Path) -> None:
    cloud = RatingCloud()
    router = make(cloud, tier="premium")
    answer = await router.complete(EASY)
    cloud.ratings.clear()
    router._answered["chatcmpl-other"] = "cloud"  # an id of a cloud answer the cloud does not know as ours
    with pytest.raises(OutcomeNotFound):
        await router.feedback("chatcmpl-other", 1)
    assert answer.id == "chatcmpl-1"
    await router.aclose()
