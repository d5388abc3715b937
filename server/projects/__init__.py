"""Projects: the container of forms, app users, entity lists and encryption keys."""
