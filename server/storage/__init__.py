"""Attachment storage: one BlobStore interface, a local folder and an S3 backend."""
