"""HoloViews plot factories for the dashboard (no Panel here; the engine knows nothing of these)."""
