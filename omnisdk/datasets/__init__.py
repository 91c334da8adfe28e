"""Datasets: the BEIR-style multi-modal format (loading, validation) and the OmniWorld generator."""
