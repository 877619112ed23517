"""``outcrop serve``: a finished run as a local web application (search from the map, marks, export)."""
