"""`livedash verify`: an independent recount of the raw topic against what Pinot holds."""
