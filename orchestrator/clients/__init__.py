"""One long-lived client per downstream hop, turning its failures into ServiceErrors that name it."""
