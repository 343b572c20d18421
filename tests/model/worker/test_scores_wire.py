"""Plausibility scores cross the HTTP boundary: server body -> remote client, and pool joins."""

from __future__ import annotations

from model.protocol import GenerationRequest, GenerationResult
from model.worker.pool import join_results
from model.worker.remote import parse_response
from model.worker.server import completion_body


def test_scores_survive_the_server_body_and_the_remote_parser() -> None:
    result = GenerationResult(
        ("dub", "jazz"), "m", finished=tuple([True, False]), scores=(-1.25, -3.5)
    )
    body = completion_body([result], "m", created=0)
    assert [c["mgg_score"] for c in body["choices"]] == [-1.25, -3.5]
    parsed = parse_response(body, GenerationRequest(prompt="genre:", n=2))
    assert parsed.scores == (-1.25, -3.5)


def test_a_backend_that_does_not_score_sends_a_plain_openai_body() -> None:
    body = completion_body([GenerationResult(("dub",), "m")], "m", created=0)
    assert "mgg_score" not in body["choices"][0]
    assert parse_response(body, GenerationRequest(prompt="genre:")).scores == ()


def test_joined_parts_keep_their_scores_only_when_all_scored() -> None:
    a = GenerationResult(("x",), "m", scores=(-1.0,))
    b = GenerationResult(("y", "z"), "m", scores=(-2.0, -3.0))
    assert join_results([a, b]).scores == (-1.0, -2.0, -3.0)
    assert join_results([a, GenerationResult(("y",), "m")]).scores == ()


def test_the_remote_body_asks_to_avoid_known_genres_only_when_the_request_does() -> None:
    from model.worker.remote import request_body

    plain = request_body(GenerationRequest(prompt="genre:"), "m")
    assert "avoid_known" not in plain  # a plain OpenAI body for a plain request
    assert request_body(GenerationRequest(prompt="genre:", avoid_known=True), "m")["avoid_known"]
