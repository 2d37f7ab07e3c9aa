"""Sans-IO domain layer: the canonical model, validation, routing and mapping."""
