"""qcf-studio engine: the science and the training of the SAGIPS-style inverse-problem solver.

By pipeline stage:

- :mod:`engine.problems`: the theories (parameters → QCFs → observables) and their tabulation grids;
- :mod:`engine.samplers`: differentiable sampling of events from the observables' densities;
- :mod:`engine.detector`: detector effects (smearing, acceptance, background, a learned surrogate);
- :mod:`engine.data`: measured data (pseudo-data from a truth, data files), histograms and marginals;
- :mod:`engine.gan`: the GAN fit (networks, the training step, checkpoints); :mod:`engine.mle`: the likelihood fit;
- :mod:`engine.accel`: the GAN step's speed machinery, behind :mod:`engine.gan.accelerator` (removable);
- :mod:`engine.run`: running fits (members and data-parallel ranks on Dask, metric sinks, devices);
- :mod:`engine.results`: the results contract, closure metrics, safe file writing;
- :mod:`engine.campaign`: closure campaigns over many pseudo-data replicas;
- :mod:`engine.spec`: the run specification and its validation, torch-free, with its sections
  (:mod:`engine.spec_sections`, :mod:`engine.spec_detector`, :mod:`engine.specfields`), the values of its
  choice fields (:mod:`engine.choices`), the problems' facts (:mod:`engine.problem_catalog`) and its JSON
  Schema (:mod:`engine.spec_schema`).

Pure torch/numpy/xarray. Nothing here imports Panel, HoloViews or Bokeh (nor ``app`` or ``layouts``), and only
:mod:`engine.run.distributed`, :mod:`engine.run.cluster` (the embedded cluster) and the campaign driver import Dask.
"""

__version__ = "0.1.0"
