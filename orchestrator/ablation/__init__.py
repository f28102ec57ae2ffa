"""`rlan ablate`: every seed fix off vs on across seeds, and its report."""
