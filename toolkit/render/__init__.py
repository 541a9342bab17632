"""Pictures a person reads: image I/O and colour maps, labelled panels and grids with legends,
plots drawn with Pillow (no matplotlib on the edge install)."""
