"""Evaluation: retrieval metrics, exact search, and per-task reports."""
