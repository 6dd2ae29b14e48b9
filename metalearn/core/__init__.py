"""The data every part shares: episodes, losses, registries and argument checks; imports nothing above it."""
