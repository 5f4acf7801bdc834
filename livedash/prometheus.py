"""The one way to read Prometheus metrics (the dataflow's /metrics): scrape a URL, parse its text with
prometheus_client's parser, sum the samples of a name."""

from __future__ import annotations

from collections.abc import Iterable

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from livedash.errors import LivedashError

__all__ = ["Sample", "ScrapeError", "parse", "scrape", "total"]


class ScrapeError(LivedashError):
    """The endpoint did not answer with metrics. `reason`: the error's type (ConnectionError, HTTPError, ...)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{reason} at {url}")
        self.url = url
        self.reason = reason


def parse(text: str) -> list[Sample]:
    """Every sample of the exposition text: name (with its _total, _created, _bucket suffix), labels, value."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape(url: str, timeout_s: float = 2.0) -> list[Sample]:
    """The samples at `url`; ScrapeError when it cannot be reached or answers with an HTTP error."""
    try:
        resp = requests.get(url, timeout=timeout_s)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise ScrapeError(url, type(exc).__name__) from exc
    return parse(resp.text)


def total(samples: Iterable[Sample], name: str) -> float:
    """The sum of the samples named exactly `name` over all their labels (0 when there is none)."""
    return sum(sample.value for sample in samples if sample.name == name)
