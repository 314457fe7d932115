from .fid import fd, frechet_distance
from .prdc import precision_recall

__all__ = ["fd", "frechet_distance", "precision_recall"]
