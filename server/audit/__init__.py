"""The audit log: who did what, when, to which project, form or record."""
