"""Accounts and access: users, app users (devices), sessions, roles and assignments."""
