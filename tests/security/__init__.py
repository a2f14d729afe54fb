"""Access control, hostile input and fuzzing of the running services."""
