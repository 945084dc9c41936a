"""Serving a model in an executor replica: the scheduler its model work runs under
(`scheduler`) and the line operators see once it listens (`announce`)."""
