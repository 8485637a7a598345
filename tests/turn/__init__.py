"""Tests of TURN: credentials issued by the coordinator, checked by a real coturn."""
