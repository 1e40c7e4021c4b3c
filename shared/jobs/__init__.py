"""Batch jobs: their schedules as data (``schedule``) and their runs (``runs``)."""
