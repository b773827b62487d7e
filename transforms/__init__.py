"""Beam transforms: read documents, embed them, write embeddings."""
