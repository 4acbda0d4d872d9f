"""qcf-studio engine: the science and the training of the SAGIPS-style inverse-problem solver.

Pure torch/numpy/xarray. Nothing here imports Panel, HoloViews or Bokeh, and only
:mod:`engine.distributed` imports Dask.
"""

__version__ = "0.1.0"
