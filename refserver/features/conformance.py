"""Placeholder replaced below once the conformance fixtures are written."""

from refserver.features.catalog import Catalog


def build_catalog() -> Catalog:
    return Catalog()
