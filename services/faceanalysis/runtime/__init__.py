"""What every faceanalysis service shares: config, logging, metrics, health, channels, server."""
