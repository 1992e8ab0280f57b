"""The optional video stage: a poster frame and an HLS rendition of videos (docs/transforms.md)."""
