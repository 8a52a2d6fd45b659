"""What users run: the `bitswap` command line, training, archival jobs and reports."""
