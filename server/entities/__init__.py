"""Entity lists (datasets) and their entities, as ODK Central and pyodk know them."""
