"""Data preparation (`colord data`): public sources turned into training and held-out folders."""
