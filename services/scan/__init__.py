"""The scan stage: ClamAV verdict on every received file."""
