"""Every message on the wire: definitions, encoding and validation, without I/O."""
