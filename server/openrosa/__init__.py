"""The OpenRosa protocol edge that ODK Collect talks to: headers, XML documents, routes."""
