"""Data validation: structure, Great Expectations content checks, cross-table integrity."""

from caprank.data.validation.report import CheckResult, RowExample, ValidationReport
from caprank.data.validation.validate import validate_dataset

__all__ = ["CheckResult", "RowExample", "ValidationReport", "validate_dataset"]
