"""Image weakening: the model answers while its view of the image is noised, so its prior shows.

``schedule`` holds the DDPM forward process, ``view`` what the weakened model sees (the pixel and
feature transforms every engine applies through one interface), ``negatives`` turns units into
requests and answers into rejected answers.
"""
