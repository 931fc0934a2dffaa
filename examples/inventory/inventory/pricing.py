"""Order totals with volume discounts."""

from inventory.stock import Stock

DISCOUNT_FROM = 10  # units per line that earn the volume discount
DISCOUNT = 0.1


def line_total(unit_price, quantity):
    """Price of one order line, with the volume discount from DISCOUNT_FROM units on."""
    total = unit_price * quantity
    if quantity > DISCOUNT_FROM:
        total = total * (1 - DISCOUNT)
    return round(total, 2)


def order_total(lines):
    """Sum of the line totals of (unit_price, quantity) pairs."""
    return round(sum(line_total(p, q) for p, q in lines), 2)


def can_fulfil(stock: Stock, order):
    """Whether every (sku, quantity) of the order is in stock."""
    return all(stock.on_hand(sku) >= quantity for sku, quantity in order)
