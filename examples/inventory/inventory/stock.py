"""Stock levels per product."""


class Stock:
    """Quantities on hand, by SKU."""

    def __init__(self):
        self.levels = {}

    def receive(self, sku, quantity):
        """Add delivered units."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.levels[sku] = self.levels.get(sku, 0) + quantity

    def ship(self, sku, quantity):
        """Remove shipped units; refuse to go below zero."""
        on_hand = self.levels.get(sku, 0)
        if quantity > on_hand:
            raise ValueError(f"only {on_hand} of {sku} on hand")
        self.levels[sku] = on_hand - quantity

    def on_hand(self, sku):
        """Units of `sku` in stock."""
        return self.levels.get(sku, 0)
