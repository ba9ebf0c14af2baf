"""The user-space TCP/IP stack: sans-IO protocol cores and the Stack that drives them."""
