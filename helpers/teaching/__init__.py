"""Teaching aids for the notebooks: the formulas' intermediate quantities, pictures, example pages, the explorer.

The top layer: may import every other package; nothing imports it.
"""
