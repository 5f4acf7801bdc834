"""Side by side with peer stream processors (python -m bench.peers). The task every peer computes: 10 s tumbling
windows; events of type EOF_TYPE are the harness's markers, which every peer ignores."""

WINDOW_MS = 10_000
EOF_TYPE = "__eof__"
