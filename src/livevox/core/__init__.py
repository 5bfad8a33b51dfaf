"""What every layer uses: audio formats and resampling, ids, protocol errors, the stage executors."""
