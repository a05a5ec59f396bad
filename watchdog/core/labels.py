"""Label selection, one rule everywhere (store reads, SLI sources, alert rules): a series is selected when
it carries every wanted label with the same value (subset match); no wanted labels select everything."""

from __future__ import annotations

from collections.abc import Mapping


def labels_match(series_labels: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """Subset match: the series carries every wanted label with the same value."""
    if not wanted:
        return True
    return all(series_labels.get(k) == v for k, v in wanted.items())
