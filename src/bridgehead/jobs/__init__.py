"""Background jobs: a queue in the database, workers that claim and run them, and the executor seam."""
