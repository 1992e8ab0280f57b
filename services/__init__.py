"""Sluice services: one package per pipeline stage."""
