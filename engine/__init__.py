"""qcf-studio engine: the science and the training of the SAGIPS-style inverse-problem solver.

Pure torch/numpy/xarray. Nothing here imports Panel, HoloViews or Bokeh (nor ``app`` or ``layouts``), and only
:mod:`engine.distributed`, :mod:`engine.cluster` (the embedded cluster) and the campaign driver import Dask.
"""

__version__ = "0.1.0"
