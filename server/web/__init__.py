"""The web console for coordinators and analysts (server-rendered, French and English)."""
