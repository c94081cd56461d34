"""Load scenarios (locust) for a Double-11 peak; run them with `peak loadtest`."""
