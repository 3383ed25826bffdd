"""The few figures of a vLLM server's Prometheus endpoint that the engines table shows (parsed by
`prometheus_client`)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

VLLM_SERIES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:prefix_cache_hits_total": "prefix_hits",
    "vllm:prefix_cache_queries_total": "prefix_queries",
    "vllm:generation_tokens_total": "generation_tokens",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sum the few vLLM Prometheus series the engines table shows (over all label sets)."""
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if key := VLLM_SERIES.get(sample.name):
                figures[key] = figures.get(key, 0.0) + sample.value
    return figures
