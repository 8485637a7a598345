"""Tests across real network boundaries: NAT routers, blocked UDP, 1:1 NAT, namespaces."""
