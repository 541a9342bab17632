"""Exporters: the formats table (`formats.py`) and one module per format."""
