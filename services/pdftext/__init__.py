"""The optional pdftext stage: the text of each page of a PDF (docs/transforms.md)."""
