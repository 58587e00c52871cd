"""The gallery page: plain HTML, CSS and JavaScript shipped as package data (no build step, nothing fetched)."""
