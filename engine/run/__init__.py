"""Running fits: members and ranks on Dask or here, metric sinks, devices, the embedded cluster."""
