"""`rlm-local serve`: RLM runs for other programs, over HTTP, on one set of shared engines.

auth (API keys and tenants) -> documents (uploads on disk) -> jobs (runs as server-side tasks with events) -> app
(the OpenAI-compatible and jobs routes) -> command (start the engines, then uvicorn).
"""
