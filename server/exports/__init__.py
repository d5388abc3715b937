"""Exports for analysts: tables from the field schema, CSV/XLSX/GeoJSON writers, cleaning."""
