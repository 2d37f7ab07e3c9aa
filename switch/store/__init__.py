"""Durable state: the journal, store-and-forward queue and card data at rest."""
