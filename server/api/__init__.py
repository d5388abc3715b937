"""The /v1 REST API, compatible with ODK Central's (pyodk, ruODK, Power BI through OData).

Each resource is one module of routes on the ``api`` blueprint (sessions, users, projects...);
routes are thin: read the request, call one service, render with the helpers of
:mod:`server.api.render`. Problems render as Central's JSON ``{code, message, details}``.
"""
