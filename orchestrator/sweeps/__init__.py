"""Sweeps: search spaces, Ray Tune + Optuna + ASHA, the parent run and each trial's child run."""
