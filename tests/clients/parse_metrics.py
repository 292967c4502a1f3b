"""Parses a /metrics scrape (standard input) with Prometheus's own Python
client's text parser and prints every sample as JSON: one object
{"name", "labels", "value"} per sample, plus each family's type.
A scrape the parser refuses makes this exit non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples, types = [], {}
for family in text_string_to_metric_families(sys.stdin.read()):
    types[family.name] = family.type
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
print(json.dumps({"types": types, "samples": samples}))
