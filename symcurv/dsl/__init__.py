"""The modelling DSL users write: ``Model``, the op functions, losses and initialisers."""
