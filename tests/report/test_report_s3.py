"""`kubenas report s3://...` reads a search in a bucket (the real SeaweedFS S3 server) through
the storage interface, as it reads a work directory."""

from __future__ import annotations

import pytest

from devenv.testing import make_s3_store
from kubenas.cli import main

from .conftest import TRIALS, run_search
from .test_report import Page

pytestmark = pytest.mark.s3


def test_a_report_of_a_search_in_a_bucket(s3_server, tmp_path, monkeypatch):
    store = make_s3_store(s3_server)
    run_search(store, "tiny", "reinforce")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = tmp_path / "report.html"
    assert main(["report", store.url(), "--out", str(out), "--endpoint", s3_server.endpoint]) == 0
    page = Page(out.read_text())
    assert len(page.tables["leaderboard"]) == TRIALS + 1
    assert "tiny" in out.read_text() and page.tables["cost-by-device"][1][:2] == ["cpu", str(TRIALS)]
