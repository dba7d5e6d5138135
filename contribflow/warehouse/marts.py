"""The published marts' columns, in their order: the one list publish writes, trace reads, and dbt's
enforced contracts (dbt/models/marts) are checked against (tests/test_units.py)."""

FCT_COLUMNS = ("declaration_id", "taxpayer_key", "event_date", "amount", "currency", "contribution_type",
               "status", "country", "file_date", "source_file", "source_line", "raw_loaded_at")
"""marts.fct_contributions (and the build's fct_contributions_delta)."""
DIM_COLUMNS = ("taxpayer_key", "main_country", "first_event_date", "last_event_date", "declarations",
               "amount_paid", "amount_due")
"""marts.dim_taxpayer."""
