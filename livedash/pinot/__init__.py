"""The one Pinot client: broker queries (with freshness and errors) and the controller's REST API."""
