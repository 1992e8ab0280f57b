"""The thumbnail stage: WebP previews of stored images."""
