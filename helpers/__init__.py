"""CAM toolkit: model loading, hooks, CAM methods, metrics, statistics and plotting."""
