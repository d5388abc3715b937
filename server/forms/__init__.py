"""Forms: XLSForm compilation, the field schema, versions, states and media."""
