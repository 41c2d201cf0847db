"""Peer servers measured in the same run as refserver (the official SDK's own server)."""
