"""Signed transformation URLs: mint, verify, render, cache and serve derived images."""
