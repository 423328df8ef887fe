"""2-D classification of particle images.

``features``: rotation-invariant (and, for the autocorrelation, shift-invariant) image features built on the
steerable Fourier–Bessel basis of ``physics.steerable``, and nearest neighbours in feature space.
``cluster``: clustering of images on those features (k-means or a Gaussian mixture from scikit-learn) and
the ``embed`` convenience from images to features. ``em``: 2-D classification by expectation-maximisation.
"""
