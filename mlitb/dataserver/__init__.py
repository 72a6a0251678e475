"""The data server: uploads, the embedded store, and batches of data vectors over HTTP."""
