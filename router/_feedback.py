"""`POST /v1/feedback`: a caller's rating of one of its answers, joined to that answer's outcome record.

The wire types of the route and their validation, for every door (the server, Lambda, the device
SDK). A rating is 1 (good), -1 (bad), or any number from 0 to 1 (a graded score); the id is the
answer's `id` (`chatcmpl-...`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hyrouter.router._errors import RequestError
from hyrouter.router._requests import request_error


class FeedbackRequest(BaseModel):
    """The body of `POST /v1/feedback`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=256, description="The answer's id (chatcmpl-...).")]
    rating: Annotated[
        float, Field(strict=True, description="1 (good), -1 (bad), or a graded score from 0 to 1.")
    ]
    comment: Annotated[str | None, Field(max_length=4000, description="What was wrong or right.")] = None

    @field_validator("rating")
    @classmethod
    def _known_rating(cls, value: float) -> float:
        if value != -1 and not 0 <= value <= 1:
            raise ValueError("a rating is 1, -1, or a number from 0 to 1")
        return value


class FeedbackResponse(BaseModel):
    """The answer of `POST /v1/feedback`: the rating is joined to the answer's outcome record."""

    id: str
    object: Literal["feedback"] = "feedback"
    rating: float


def validate_feedback(payload: Any) -> FeedbackRequest:
    """`payload` (parsed JSON) as a `FeedbackRequest`; a `RequestError` (400) naming the problem if not."""
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.")
    try:
        return FeedbackRequest.model_validate(payload)
    except ValidationError as exc:
        raise request_error(exc) from None
