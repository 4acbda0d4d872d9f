"""qcf-studio application: CLI, Dask cluster set-up, run control and the Panel dashboard."""
