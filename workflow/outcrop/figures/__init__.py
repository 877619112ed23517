"""Figures and pages: quicklooks, maps, projections, the cluster table, the web map and the summary page."""
