"""The benchmark harness: the real service under wrk load, its ceilings, and a results table."""
