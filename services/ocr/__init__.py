"""The optional ocr stage: the text of images, by Tesseract (docs/transforms.md)."""
