"""The three services as local processes: `make run`'s launcher and the helpers tests and perf/ share."""
