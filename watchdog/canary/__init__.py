"""The canary guard: the canary cohort against its limits and the baseline, decided by an anytime-valid
sequential test, and the flag rolled back (or promoted) by itself."""
