"""Helm chart tests."""
