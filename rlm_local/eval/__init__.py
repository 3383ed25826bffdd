"""Evaluation: seeded long-context tasks (`tasks`), their scorers (`scoring`), the runner and the report."""
