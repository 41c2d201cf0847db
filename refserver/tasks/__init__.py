"""Durable tasks: the service behind the core's `TaskBook` and the runner that works the shared queue."""
