"""The params and results of each area of methods; protocol/methods.py names them all."""
