"""Submissions: safe parsing of records, intake (dedupe, versions, split uploads), review."""
