"""Real services for tests, started on 127.0.0.1 inside the test and stopped after it."""
