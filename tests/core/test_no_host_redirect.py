"""No answer builds a URL from the client's Host header (slash redirects are off)."""

from __future__ import annotations

from tests.auth.test_router import assert_problem
from tests.conftest import SignedIn


async def test_no_slash_redirect_to_the_host_header(alice: SignedIn) -> None:
    answer = await alice.client.get("/api/sketch", headers={"Host": "evil.example"})
    assert answer.status_code != 307
    assert "location" not in answer.headers
    assert_problem(answer, 404, "http.not_found")
    # The documented path answers as before.
    listed = await alice.client.get("/api/sketch/", headers={"Host": "evil.example"})
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
