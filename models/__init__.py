"""Build-time tools: encoder export (and, later, head training)."""
