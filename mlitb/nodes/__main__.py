"""``python -m mlitb.nodes join URL ...``: the same as ``mlitb node join URL ...``."""

from mlitb.cli._node import node_app

if __name__ == "__main__":
    node_app(prog_name="mlitb node")
