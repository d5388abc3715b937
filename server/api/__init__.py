"""The /v1 REST API, compatible with ODK Central's, and OData."""
