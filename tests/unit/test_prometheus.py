"""The one Prometheus parse: samples by name and labels, summed by name; a scrape that fails says why."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from livedash import prometheus

TEXT = """# HELP livedash_rows_out_total Aggregate rows published
# TYPE livedash_rows_out_total counter
livedash_rows_out_total{partition="0",kind="window"} 7.0
livedash_rows_out_total{partition="1",kind="window"} 3.0
livedash_rows_out_created{partition="0",kind="window"} 1.7e9
# HELP batch_seconds Time per batch
# TYPE batch_seconds histogram
batch_seconds_bucket{le="0.1"} 4.0
batch_seconds_bucket{le="+Inf"} 5.0
batch_seconds_count 5.0
batch_seconds_sum 0.9
"""


def test_samples_keep_their_names_and_labels_and_sum_by_name() -> None:
    samples = prometheus.parse(TEXT)
    assert [(s.name, s.labels, s.value) for s in samples if s.name == "livedash_rows_out_total"] == [
        ("livedash_rows_out_total", {"partition": "0", "kind": "window"}, 7.0),
        ("livedash_rows_out_total", {"partition": "1", "kind": "window"}, 3.0),
    ]
    assert prometheus.total(samples, "livedash_rows_out_total") == 10
    assert prometheus.total(samples, "batch_seconds_count") == 5 and prometheus.total(samples, "batch_seconds") == 0
    assert prometheus.total(samples, "livedash_rows_out") == 0  # exact names only


def answered(status: int, text: str) -> Any:
    def get(url: str, timeout: float) -> requests.Response:
        resp = requests.Response()
        resp.status_code, resp._content, resp.url = status, text.encode(), url
        return resp

    return get


def refused(url: str, timeout: float) -> requests.Response:
    raise requests.ConnectionError("refused")


def test_a_scrape_parses_the_answer_and_a_failed_one_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:3030/metrics"
    monkeypatch.setattr(prometheus.requests, "get", answered(200, TEXT))
    assert prometheus.total(prometheus.scrape(url), "livedash_rows_out_total") == 10
    for get, reason in ((refused, "ConnectionError"), (answered(500, "boom"), "HTTPError")):
        monkeypatch.setattr(prometheus.requests, "get", get)
        with pytest.raises(prometheus.ScrapeError) as exc:
            prometheus.scrape(url)
        assert (str(exc.value), exc.value.reason) == (f"{reason} at {url}", reason)
