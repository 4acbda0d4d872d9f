"""Measured data: pseudo-data from a truth, data files, safe HDF5 reading, histograms and marginals."""
