"""Teachers: the networks whose weights and layer sizes are recovered.

- :mod:`.synthetic`: the paper's appendix-A.4 teachers (:func:`make_teacher`), one or several
  hidden layers, queried on uniform inputs.
- :mod:`.images`: teachers trained on an image dataset (appendix A.6.3).
"""

from ..queries.uniform import Dataset
from .images import ImageTeacher, accuracy, train_image_teacher
from .synthetic import Teacher, make_teacher

__all__ = ["Dataset", "ImageTeacher", "Teacher", "accuracy", "make_teacher", "train_image_teacher"]
