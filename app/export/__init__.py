"""Figures and reports of runs and campaigns as files: PNG, SVG, PDF and standalone HTML."""
