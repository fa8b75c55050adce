"""gridshift workers: Celery tasks, inference engines and energy meters."""
