"""`rlan compare`: a sweep's trials read back from MLflow, ranked, and written as a table, CSV, JSON and plots."""
