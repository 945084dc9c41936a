"""What operators see: the names of the metrics and stages (`names`, importing nothing), the
metrics and spans (`metrics`), the one stage timer (`stages`), and the GPU gauges read at scrape
time (`gpu`)."""
