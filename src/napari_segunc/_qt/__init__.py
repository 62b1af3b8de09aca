"""Qt dock widgets (napari). Nothing outside this package and ``io/_npe2.py`` imports Qt or napari."""
