from inventory.pricing import can_fulfil, line_total, order_total
from inventory.stock import Stock


def test_small_line_has_no_discount():
    assert line_total(2.0, 3) == 6.0


def test_discount_starts_at_ten_units():
    assert line_total(1.0, 10) == 9.0


def test_large_line_is_discounted():
    assert line_total(1.0, 20) == 18.0


def test_order_total():
    assert order_total([(2.0, 3), (1.0, 10)]) == 15.0


def test_can_fulfil():
    s = Stock()
    s.receive("apple", 4)
    assert can_fulfil(s, [("apple", 4)])
    assert not can_fulfil(s, [("apple", 5)])
