import math


def area(radius):
    """Area of a circle."""
    return math.pi * radius * radius


def perimeter(radius):
    """Perimeter of a circle."""
    return 2 * math.pi * radius


if __name__ == "__main__":
    r = 2.0
    print("area", area(r))
    print("perimeter", perimeter(r))
