"""Pictures of IR graphs: ``draw(graph, path)`` writes .dot, .svg (Graphviz) or .png/.pdf.

Importing this package is cheap: matplotlib loads only when a .png or .pdf is drawn.
"""

from symcurv.viz.draw import draw

__all__ = ["draw"]
