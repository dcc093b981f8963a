"""Video decoding with motion vectors, datasets, palettes and synthetic data."""
