"""CRD generation and validation tests."""
