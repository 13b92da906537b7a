import logging

logger = logging.getLogger(__name__)


def load(path):
    print(f"loading {path}")
    with open(path) as f:
        data = f.read()
    print(f"loaded {len(data)} bytes")
    return data


def save(path, data):
    print(f"saving {path}")
    with open(path, "w") as f:
        f.write(data)
