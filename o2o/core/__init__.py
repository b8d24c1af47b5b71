"""The engine's shared core: batch type, networks, train state, buffers, fused updates."""
