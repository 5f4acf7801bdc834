"""What one dashboard process shares between all its viewers, in an importable module (not the Streamlit
script) so that every run of the script, and tests, reach the same instance."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard import health, query
from livedash import config
from livedash.config import Settings
from livedash.pinot.client import PinotClient, QueryService


@dataclass
class Resources:
    """Settings, catalog, the Pinot session with its query cache, and the last metrics scrape (for rates)."""

    settings: Settings
    catalog: query.Catalog
    service: QueryService
    metrics_url: str
    last_sample: health.Sample | None = None


@st.cache_resource
def resources() -> Resources:
    settings = config.load()
    client = PinotClient(settings.pinot.broker_url, settings.dashboard.query_timeout_s)
    metrics_url = f"http://127.0.0.1:{settings.dataflow.metrics_port}/metrics"
    return Resources(settings, query.Catalog.from_settings(settings.pipeline), QueryService(client.query), metrics_url)
