"""OData as ODK Central speaks it, apart from the routes that serve it.

``filter`` reads the submissions' ``$filter`` (also the exports' ``$filter`` option);
``table_filter`` reads it over another table's own fields (the entities'); ``format`` builds the
service document, ``$metadata`` and the rows of a form's records; ``services`` finds what the
form's OData views read. The views are in :mod:`server.api.odata` and :mod:`server.api.entities`.
"""
