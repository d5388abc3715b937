"""The console's pages, one module per subject; each adds its routes to ``server.web.views.bp``."""
