"""The dashboard's HoloViews plot factories and the Panel layouts that arrange them into panels and the page
(the engine knows nothing of these; app/ builds its views from them)."""
