"""sympy side of symcurv: local derivatives of elementwise functions and code printing."""
