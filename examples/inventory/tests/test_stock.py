import pytest

from inventory.stock import Stock


def test_receive_and_ship():
    s = Stock()
    s.receive("apple", 5)
    s.ship("apple", 3)
    assert s.on_hand("apple") == 2


def test_cannot_oversell():
    s = Stock()
    s.receive("pear", 1)
    with pytest.raises(ValueError):
        s.ship("pear", 2)
