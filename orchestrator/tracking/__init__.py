"""MLflow for every run: the client with retries and buffering, the one recorder, artifacts and plots."""
