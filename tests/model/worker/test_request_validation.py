"""`model.protocol.check_request`: what no worker may be asked to generate."""

from __future__ import annotations

import pytest

from model.protocol import MAX_SEED, GenerationRequest, Problem, check_request, text_problem


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (GenerationRequest(prompt=""), "prompt"),
        (GenerationRequest(prompt="a\x00b"), "prompt"),
        (GenerationRequest(prompt="\ud800"), "prompt"),
        (GenerationRequest(prompt="x", n=0), "n"),
        (GenerationRequest(prompt="x", n=True), "n"),
        (GenerationRequest(prompt="x", max_tokens=0), "max_tokens"),
        (GenerationRequest(prompt="x", max_tokens=2.0), "max_tokens"),  # type: ignore[arg-type]
        (GenerationRequest(prompt="x", temperature=-0.1), "temperature"),
        (GenerationRequest(prompt="x", temperature=float("nan")), "temperature"),
        (GenerationRequest(prompt="x", top_p=0.0), "top_p"),
        (GenerationRequest(prompt="x", top_p=1.5), "top_p"),
        (GenerationRequest(prompt="x", stop=("",)), "stop"),
        (GenerationRequest(prompt="x", stop=("\x1b",)), "stop"),
        (GenerationRequest(prompt="x", seed=-1), "seed"),
        (GenerationRequest(prompt="x", seed=MAX_SEED + 1), "seed"),
        (GenerationRequest(prompt="x", seed=False), "seed"),
    ],
)
def test_unservable_requests_name_the_field(request_: GenerationRequest, param: str) -> None:
    problem = check_request(request_)
    assert isinstance(problem, Problem)
    assert problem.param == param
    assert problem.message.startswith(f"'{param}'")


@pytest.mark.parametrize(
    "request_",
    [
        GenerationRequest(prompt="genre:"),
        GenerationRequest(prompt="like: dub\n\tgenre:\r\n", n=3, stop=("\n",)),
        GenerationRequest(prompt="x", temperature=0.0, top_p=1.0, seed=0),
        GenerationRequest(prompt="x", seed=MAX_SEED, stop=()),
        GenerationRequest(prompt="ünïcödé 🎸", stop=("🎸",)),
    ],
)
def test_servable_requests_pass(request_: GenerationRequest) -> None:
    assert check_request(request_) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("genre:\n", None),
        ("tab\tand\rreturn", None),
        ("bell\x07", "control character U+0007 at position 4"),
        ("del\x7f", "control character U+007F at position 3"),
        ("c1\x85", "control character U+0085 at position 2"),
        ("\udfff", "lone surrogate U+DFFF at position 0"),
    ],
)
def test_text_problem(text: str, expected: str | None) -> None:
    assert text_problem(text) == expected
