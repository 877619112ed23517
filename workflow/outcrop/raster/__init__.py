"""Raster input and grids: sensors, scene preparation onto the run grid, surface masks, areas of
interest, tiles, STAC and the demo's synthetic scenes."""
