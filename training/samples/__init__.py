"""What training and evaluation both feed the model: images read from folders, the sketches drawn
from them (XDoG or drawn line art), the augmentations and the correspondence they imply."""
