"""What operators see: the metrics and spans (`metrics`), the one stage timer (`stages`), and
the GPU gauges read at scrape time (`gpu`)."""
