"""Capacity planning offline: a discrete-event simulation of the server driven by a learned cost model."""
