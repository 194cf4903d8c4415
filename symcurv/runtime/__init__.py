"""What runs a model: the reference interpreter, compiled programs and build directories.

Nothing here imports sympy at module level: ``sc.load`` and every program call stay
sympy-free.
"""
